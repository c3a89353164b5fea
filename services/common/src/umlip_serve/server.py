"""The gRPC server around a :class:`Potential`: contract, health, reflection, shutdown.

``create_server(potential, settings)`` builds and binds a server (tests bind port 0);
``serve(potential_class)`` is a service's whole entrypoint: it reads the settings from
the environment, starts the server NOT_SERVING, loads the model, turns SERVING, and on
SIGTERM/SIGINT turns NOT_SERVING again before stopping within the grace period.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve.batcher import DynamicBatcher
from umlip_serve.calculation import CalculationEngine
from umlip_serve.potential import ModelInfo, Potential, resolve_settings
from umlip_serve.provenance import resolve_finetuned
from umlip_serve.settings import Settings
from umlip_wire.errors import (
    CalculatorSetupError,
    InvalidRequestError,
    ModelNotLoadedError,
    UmlipError,
    public_message,
    status_code_for,
)
from umlip_wire.tls import is_loopback, server_credentials
from umlip_wire.training_data import FineTuneError

logger = logging.getLogger("umlip_serve.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PotentialService"].full_name
_UNITS = {
    "length": "Å",
    "energy": "eV",
    "forces": "eV/Å",
    "stress": "eV/Å^3 (Voigt xx yy zz yz xz xy, tensile positive)",
}
_M = TypeVar("_M", bound=Message)
_DTYPES = {"float32": pb.DTYPE_FLOAT32, "float64": pb.DTYPE_FLOAT64}


class PotentialServicer(pb_grpc.PotentialServiceServicer):
    """Implements the contract; every exception is mapped to a status in ``_guard``.

    Requests arrive as raw bytes (see :func:`add_servicer`) and are parsed inside the
    handler, so bytes that are not a valid message answer INVALID_ARGUMENT.
    """

    def __init__(self, potential: Potential, settings: Settings) -> None:
        self._potential = potential
        self._settings = settings
        self._engine: CalculationEngine | None = None
        self._info: ModelInfo | None = None
        self._draining = False

    def attach(self, info: ModelInfo, engine: CalculationEngine) -> None:
        """Makes the loaded model callable (before this, calls get UNAVAILABLE)."""
        self._info, self._engine = info, engine

    def drain(self) -> None:
        """Refuses new calls with UNAVAILABLE so clients retry on another replica."""
        self._draining = True

    @property
    def engine(self) -> CalculationEngine | None:
        """The engine once the model is loaded."""
        return self._engine

    def _ready(self) -> tuple[ModelInfo, CalculationEngine]:
        if self._draining:
            raise ModelNotLoadedError("the potential server is shutting down; retry elsewhere")
        if self._info is None or self._engine is None:
            raise ModelNotLoadedError(f"model {self._potential.name} is still loading; retry")
        return self._info, self._engine

    def Calculate(  # noqa: N802 - gRPC method name
        self, request: pb.CalculateRequest | bytes, context: grpc.ServicerContext
    ) -> pb.CalculateResponse:
        def handle() -> pb.CalculateResponse:
            engine = self._ready()[1]
            message = _parse(pb.CalculateRequest, request)
            return engine.handle(message, lambda: _is_active(context))

        return _guard(context, handle)

    def GetModelInfo(  # noqa: N802 - gRPC method name
        self, request: pb.GetModelInfoRequest | bytes, context: grpc.ServicerContext
    ) -> pb.GetModelInfoResponse:
        def describe() -> pb.GetModelInfoResponse:
            _parse(pb.GetModelInfoRequest, request)
            return self._describe(self._ready()[0])

        return _guard(context, describe)

    def _describe(self, info: ModelInfo) -> pb.GetModelInfoResponse:
        potential, settings = self._potential, self._settings
        return pb.GetModelInfoResponse(
            model_name=info.model_name or potential.name,
            model_version=info.model_version,
            checkpoint_name=info.checkpoint_name,
            checkpoint_sha256=info.checkpoint_sha256,
            implemented_properties=[
                pb.Property.Value(f"PROPERTY_{p.name}") for p in potential.implemented_properties
            ],
            supported_atomic_numbers=sorted(info.supported_atomic_numbers),
            cutoff=info.cutoff,
            device=info.device or settings.device,
            dtype=_DTYPES.get(info.dtype or settings.dtype, pb.DTYPE_UNSPECIFIED),
            package_versions=info.package_versions,
            max_batch_atoms=settings.max_batch_atoms,
            max_message_bytes=settings.max_message_bytes,
            units=_UNITS,
            provenance=info.provenance,
        )


def _parse(message_type: type[_M], request: _M | bytes) -> _M:
    """The request message from its raw bytes (or the message itself, in-process).

    Raises:
        InvalidRequestError: the bytes are not a valid ``message_type``.
    """
    if not isinstance(request, bytes):
        return request
    try:
        return message_type.FromString(request)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise InvalidRequestError(
            f"request is not a valid {message_type.DESCRIPTOR.full_name} message: {error}"
        ) from error


def _is_active(context: grpc.ServicerContext) -> bool:
    """Whether the caller still waits for the answer (not cancelled, deadline not passed)."""
    if not context.is_active():
        return False
    remaining = context.time_remaining()
    return remaining is None or remaining > 0


def add_servicer(servicer: PotentialServicer, server: grpc.Server) -> None:
    """Registers the servicer with raw-bytes requests (parsed by the handlers).

    The generated ``add_PotentialServiceServicer_to_server`` parses in gRPC's
    deserializer, where a parse error can only become INTERNAL.
    """
    handlers = {
        "Calculate": grpc.unary_unary_rpc_method_handler(
            servicer.Calculate,
            request_deserializer=None,
            response_serializer=pb.CalculateResponse.SerializeToString,
        ),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            servicer.GetModelInfo,
            request_deserializer=None,
            response_serializer=pb.GetModelInfoResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def _guard(context: grpc.ServicerContext, handler: Callable[[], Any]) -> Any:
    """Runs a handler, turning any exception into a gRPC status (never a traceback)."""
    try:
        return handler()
    except Exception as error:
        code = status_code_for(error)
        if code is grpc.StatusCode.INTERNAL:
            logger.exception("internal error while handling a call")
        elif not isinstance(error, UmlipError):
            logger.warning("%s: %s", code.name, error)
        context.abort(code, public_message(error))


def create_server(
    potential: Potential, settings: Settings
) -> tuple[grpc.Server, int, PotentialServicer, health.HealthServicer]:
    """Builds a bound, not yet started server (health NOT_SERVING).

    Returns:
        (server, bound port, servicer, health servicer).
    """
    settings = resolve_settings(type(potential), settings)
    potential.settings = settings
    credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    if credentials is None and not (is_loopback(settings.host) or settings.allow_plaintext):
        raise CalculatorSetupError(
            f"refusing plaintext on {settings.host}, which is not loopback: set UMLIP_TLS_CERT "
            "and UMLIP_TLS_KEY (and UMLIP_TLS_CLIENT_CA for mutual TLS), or "
            "UMLIP_ALLOW_PLAINTEXT=1 on a private network"
        )
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="grpc"),
        options=options,
        maximum_concurrent_rpcs=settings.max_concurrent_calls,
    )
    servicer = PotentialServicer(potential, settings)
    add_servicer(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if credentials is None:
        port = server.add_insecure_port(settings.address)
    else:
        port = server.add_secure_port(settings.address, credentials)
    if port == 0:
        raise CalculatorSetupError(f"cannot bind {settings.address}")
    return server, port, servicer, health_servicer


def load_into(
    potential: Potential,
    settings: Settings,
    servicer: PotentialServicer,
    health_servicer: health.HealthServicer,
) -> DynamicBatcher:
    """Loads the model, attaches it to the servicer and turns health SERVING.

    A fine-tuned checkpoint (``UMLIP_CHECKPOINT`` naming a checkpoint written by a umlip
    fine-tuning run, or its folder) is verified against its provenance record, handed to
    the adapter as a file path, and reported under the record's model name with its
    provenance, so tables and reports keep it apart from the base model.
    """
    settings = resolve_settings(type(potential), settings)
    potential.settings = settings
    try:
        finetuned = resolve_finetuned(settings.checkpoint)
    except FineTuneError as error:
        raise CalculatorSetupError(str(error)) from error
    if finetuned is not None:
        potential.settings = replace(settings, checkpoint=str(finetuned.path))
    expected = settings.checkpoint_sha256.strip().lower()
    checkpoint = Path(potential.settings.checkpoint) if potential.settings.checkpoint else None
    if checkpoint is not None and checkpoint.is_file():
        potential.check_checkpoint(checkpoint)
    info = potential.load()
    if expected:
        _check_sha256(info.checkpoint_name, info.checkpoint_sha256, expected, "as loaded")
    if finetuned is not None:
        info = replace(info, model_name=finetuned.model_name, provenance=finetuned.provenance_map())
    batcher = DynamicBatcher(
        potential.calculate,
        max_atoms=settings.max_batch_atoms,
        wait_s=settings.batch_wait_ms / 1000.0,
        enabled=settings.dynamic_batching,
        max_queued_atoms=settings.max_queued_atoms,
    )
    servicer.attach(info, CalculationEngine(potential, info, settings, batcher))
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return batcher


def _check_sha256(name: str, actual: str, expected: str, when: str) -> None:
    """Refuses a checkpoint whose sha256 is not the one the settings require."""
    if actual.lower() != expected:
        raise CalculatorSetupError(
            f"checkpoint {name} has sha256 {actual or '(unknown)'} {when}, but "
            f"UMLIP_CHECKPOINT_SHA256 requires {expected}; refusing to serve it"
        )


def serve(potential_class: type[Potential], settings: Settings | None = None) -> int:
    """Runs a potential service until SIGTERM/SIGINT; returns the process exit code."""
    try:
        settings = settings or Settings.from_env()
    except UmlipError as error:
        print(f"umlip: invalid settings: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    potential = potential_class(settings)
    try:
        server, port, servicer, health_servicer = create_server(potential, settings)
    except UmlipError as error:
        print(f"umlip: cannot serve {potential.name}: {error}", file=sys.stderr)
        return 2
    server.start()
    logger.info(
        "%s listening on %s:%d (NOT_SERVING until loaded)", potential.name, settings.host, port
    )
    if settings.port_file is not None:
        tmp = settings.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(settings.port_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        batcher = load_into(potential, settings, servicer, health_servicer)
    except Exception as error:
        logger.error("could not load %s: %s", potential.name, error)
        server.stop(0)
        return 3
    logger.info("%s SERVING on port %d", potential.name, port)
    stop.wait()
    logger.info("stopping: NOT_SERVING, grace period %.1f s", settings.grace_period_s)
    health_servicer.enter_graceful_shutdown()
    servicer.drain()
    server.stop(settings.grace_period_s).wait()
    batcher.close()
    stats = batcher.stats
    logger.info(
        "stopped after %d requests, %d model calls (%d merged)",
        stats.requests,
        stats.model_calls,
        stats.merged_calls,
    )
    return 0
