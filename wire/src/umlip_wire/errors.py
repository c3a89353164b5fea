"""The contract's error hierarchy and its one mapping onto gRPC status codes.

Request-level failures are raised as :class:`UmlipError` subclasses and turned into a
gRPC status by :func:`status_code_for` — the only place that knows the mapping.
Per-structure failures are not exceptions on the wire: they travel in-band as
:class:`~umlip_wire.batch.StructureError`; inside an adapter they may be raised as
:class:`StructureFailure` from code that handles one structure at a time.
"""

from __future__ import annotations

import grpc

from umlip_wire.batch import StructureError, StructureErrorCode


class UmlipError(Exception):
    """Base of the errors the harness maps to gRPC status codes."""

    status_code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidRequestError(UmlipError):
    """The request itself is malformed (empty batch, inconsistent arrays, too many atoms)."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotLoadedError(UmlipError):
    """The model is not loaded yet, or the server is draining: retry later."""

    status_code = grpc.StatusCode.UNAVAILABLE


class ResourceExhaustedError(UmlipError):
    """The model ran out of memory on this request: send a smaller batch."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ServerBusyError(UmlipError):
    """Too much work is queued already (load shedding): retry later or elsewhere."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class CallNotActiveError(UmlipError):
    """The call's deadline passed or the client cancelled it before the model ran."""

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED


class AdapterContractError(UmlipError):
    """The model adapter broke its contract (e.g. returned the wrong number of results).

    A server fault (INTERNAL) whose message is safe and useful to send to the client.
    """

    status_code = grpc.StatusCode.INTERNAL


class CalculatorSetupError(UmlipError):
    """The model could not be loaded (bad checkpoint, missing weights, no network)."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class StructureFailure(Exception):  # noqa: N818 - a failure value raised inside adapters
    """One structure cannot be computed; becomes an in-band error, never a status."""

    def __init__(self, code: StructureErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = StructureError(code=code, message=message)


#: Messages of torch's RuntimeErrors that mean memory ran out: a GPU's, cuBLAS's, and its
#: CPU allocator's ("DefaultCPUAllocator: can't allocate memory").
_OOM_MARKERS = (
    "out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "can't allocate memory",
)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an exception from a model library means it ran out of memory.

    torch raises ``torch.OutOfMemoryError`` (a RuntimeError subclass) and RuntimeErrors
    with the messages above; the harness cannot import torch, so it matches the class
    name and, for RuntimeErrors, the message.
    """
    if isinstance(error, MemoryError | ResourceExhaustedError):
        return True
    name = type(error).__name__
    return name in {"OutOfMemoryError", "OutOfMemory"} or (
        isinstance(error, RuntimeError) and any(marker in str(error) for marker in _OOM_MARKERS)
    )


def status_code_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an exception escaping a handler (the one mapping)."""
    if isinstance(error, UmlipError):
        return error.status_code
    if is_out_of_memory(error):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INTERNAL


def public_message(error: BaseException) -> str:
    """The message sent to the client: the error's own text, never a traceback.

    Unexpected errors (INTERNAL) get a generic message; their traceback goes to the log.
    """
    code = status_code_for(error)
    if code is grpc.StatusCode.INTERNAL and not isinstance(error, AdapterContractError):
        return f"internal error in the potential service ({type(error).__name__}); see server log"
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and not isinstance(error, UmlipError):
        return "the model ran out of memory on this batch; send fewer atoms per call"
    return str(error)
