"""``PotentialClient``: the orchestrator's connection to one potential service.

Deadlines on every call, retries with backoff on UNAVAILABLE only (the contract's retry
rule), and batches larger than the server's atom or message limits split into several
calls whose results are joined in request order. A target may resolve to several
addresses (a Kubernetes headless Service): the channel balances calls across them
round-robin, since one HTTP/2 connection would otherwise pin every call to one pod.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import grpc
from ase import Atoms

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_orchestrator.evaluation import Evaluation, StructureFailed
from umlip_wire.ase_bridge import atoms_to_batch
from umlip_wire.batch import ALL_PROPERTIES, Property, StructureError, StructureOutput
from umlip_wire.codec import WIRE_TO_PROPERTY, decode_response, encode_batch, encode_properties
from umlip_wire.provenance import PROVENANCE_KIND
from umlip_wire.tls import ClientTls
from umlip_wire.tls import channel as tls_channel

logger = logging.getLogger("umlip_orchestrator.client")

#: Bytes per atom in a request (uint32 number + 3 float64) and per structure (cell, pbc).
_BYTES_PER_ATOM = 4 + 24
_BYTES_PER_STRUCTURE = 72 + 16


#: How a service that sheds load starts its RESOURCE_EXHAUSTED messages: "server busy"
#: (too many atoms queued) or gRPC's own "Concurrent RPC limit exceeded" (too many calls
#: at once). Such calls are retried like UNAVAILABLE ones (a request too large is not).
SERVER_BUSY = ("server busy", "Concurrent RPC limit exceeded")


class ServiceError(RuntimeError):
    """A call failed for the whole batch (status other than OK after retries).

    Attributes:
        code: the gRPC status code.
        target: the service address.
    """

    def __init__(self, target: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{target}: {code.name}: {details}")
        self.target = target
        self.code = code


@dataclass(frozen=True)
class ServiceInfo:
    """How a service describes itself (the GetModelInfo response as plain data)."""

    target: str
    model_name: str
    model_version: str
    checkpoint_name: str
    checkpoint_sha256: str
    implemented_properties: tuple[Property, ...]
    supported_atomic_numbers: frozenset[int]
    cutoff: float
    device: str
    dtype: str
    package_versions: dict[str, str]
    max_batch_atoms: int
    max_message_bytes: int
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def is_finetuned(self) -> bool:
        """Whether the service runs a checkpoint written by a umlip fine-tuning run."""
        return self.provenance.get("kind") == PROVENANCE_KIND

    @property
    def label_source(self) -> str | None:
        """Where a fine-tuned checkpoint's training labels came from (None otherwise)."""
        return self.provenance.get("label_source") if self.is_finetuned else None

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (for run manifests)."""
        return {
            "target": self.target,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "checkpoint_name": self.checkpoint_name,
            "checkpoint_sha256": self.checkpoint_sha256,
            "implemented_properties": [p.value for p in self.implemented_properties],
            "supported_atomic_numbers": sorted(self.supported_atomic_numbers),
            "cutoff": self.cutoff,
            "device": self.device,
            "dtype": self.dtype,
            "package_versions": dict(self.package_versions),
            "max_batch_atoms": self.max_batch_atoms,
            "max_message_bytes": self.max_message_bytes,
            "provenance": dict(self.provenance),
        }


class PotentialClient:
    """A client of one potential service (one model, possibly several replicas).

    Args:
        target: ``host:port``, or ``dns:///name:port`` to balance over every address
            the name resolves to.
        timeout_s: deadline of each call.
        max_retries: retries on UNAVAILABLE before giving up.
        backoff_s: first retry delay; doubles each retry, capped at 5 s.
        tls: TLS (and mutual TLS) settings; None reads ``UMLIP_TLS_CA``,
            ``UMLIP_TLS_CLIENT_CERT`` and ``UMLIP_TLS_CLIENT_KEY`` (none set: plaintext).
        unavailable_timeout_s: a call also gives up once the service has been
            unavailable for this long (from its first UNAVAILABLE answer), so a service
            that is down costs a bounded time, never the whole ``timeout_s`` per call.

    UNAVAILABLE and "server busy" (RESOURCE_EXHAUSTED from a service shedding load) are
    retried. A call never waits for the channel to become ready (no ``wait_for_ready``): while
    the service is down every attempt fails at once and is retried after the backoff,
    and the channel reconnects within about a second once it is back.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 300.0,
        max_retries: int = 30,
        backoff_s: float = 0.2,
        unavailable_timeout_s: float = 60.0,
        max_message_bytes: int = 256 * 1024 * 1024,
        tls: ClientTls | None = None,
    ) -> None:
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or unavailable_timeout_s < 0:
            raise ValueError(
                "timeout_s must be > 0; max_retries, backoff_s, unavailable_timeout_s >= 0"
            )
        self.target = target
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._unavailable_timeout_s = unavailable_timeout_s
        self.tls = ClientTls.from_env() if tls is None else tls
        self._channel = tls_channel(
            target,
            self.tls,
            options=[
                ("grpc.lb_policy_name", "round_robin"),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # Reconnect quickly once a restarted service is back (gRPC's default
                # backoff grows to two minutes).
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        self._stub = pb_grpc.PotentialServiceStub(self._channel)
        self._info: ServiceInfo | None = None
        self.calls = 0

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> PotentialClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, request: object) -> object:
        delay = self._backoff_s
        down_since: float | None = None
        for attempt in range(self._max_retries + 1):
            try:
                self.calls += 1
                return getattr(self._stub, method)(request, timeout=self._timeout_s)
            except grpc.RpcError as error:
                code = error.code()  # type: ignore[attr-defined]
                details = error.details()  # type: ignore[attr-defined]
                now = time.monotonic()
                down_since = now if down_since is None else down_since
                down_for = now - down_since
                busy = code is grpc.StatusCode.RESOURCE_EXHAUSTED and (details or "").startswith(
                    SERVER_BUSY
                )
                if (
                    not (code is grpc.StatusCode.UNAVAILABLE or busy)
                    or attempt == self._max_retries
                    or down_for + delay > self._unavailable_timeout_s
                ):
                    if code is grpc.StatusCode.UNAVAILABLE:
                        details = f"{details} (unavailable for {down_for:.0f} s, {attempt} retries)"
                    raise ServiceError(self.target, code, details) from None
                logger.info(
                    "%s unavailable (%s); retry %d in %.1f s",
                    self.target,
                    details,
                    attempt + 1,
                    delay,
                )
                time.sleep(delay)
                delay = min(2 * delay, 5.0)
        raise AssertionError("unreachable")

    def info(self, *, refresh: bool = False) -> ServiceInfo:
        """The service's GetModelInfo, cached after the first call."""
        if self._info is None or refresh:
            reply: pb.GetModelInfoResponse = self._call("GetModelInfo", pb.GetModelInfoRequest())  # type: ignore[assignment]
            self._info = ServiceInfo(
                target=self.target,
                model_name=reply.model_name,
                model_version=reply.model_version,
                checkpoint_name=reply.checkpoint_name,
                checkpoint_sha256=reply.checkpoint_sha256,
                implemented_properties=tuple(
                    WIRE_TO_PROPERTY[p] for p in reply.implemented_properties
                ),
                supported_atomic_numbers=frozenset(reply.supported_atomic_numbers),
                cutoff=reply.cutoff,
                device=reply.device,
                dtype=pb.Dtype.Name(reply.dtype).removeprefix("DTYPE_").lower(),
                package_versions=dict(reply.package_versions),
                max_batch_atoms=reply.max_batch_atoms,
                max_message_bytes=reply.max_message_bytes,
                provenance=dict(reply.provenance),
            )
        return self._info

    def _chunks(self, structures: Sequence[Atoms]) -> Iterator[Sequence[Atoms]]:
        """Consecutive slices within the server's atom and message-size limits."""
        info = self.info()
        max_bytes = int(info.max_message_bytes * 0.9)
        start, atoms, size = 0, 0, 0
        for index, structure in enumerate(structures):
            n = len(structure)
            extra = n * _BYTES_PER_ATOM + _BYTES_PER_STRUCTURE
            if index > start and (atoms + n > info.max_batch_atoms or size + extra > max_bytes):
                yield structures[start:index]
                start, atoms, size = index, 0, 0
            atoms += n
            size += extra
        if start < len(structures):
            yield structures[start:]

    def calculate(
        self, structures: Sequence[Atoms], properties: Sequence[Property] = ALL_PROPERTIES
    ) -> list[Evaluation | StructureFailed]:
        """Energies, forces and stresses of ``structures``, in order.

        A structure the service cannot compute comes back as :class:`StructureFailed`;
        a failure of a whole call raises :class:`ServiceError`.
        """
        results: list[Evaluation | StructureFailed] = []
        for chunk in self._chunks(structures):
            batch = atoms_to_batch(chunk)
            request = pb.CalculateRequest(
                batch=encode_batch(batch), properties=encode_properties(properties)
            )
            reply: pb.CalculateResponse = self._call("Calculate", request)  # type: ignore[assignment]
            for result in decode_response(reply, batch.atoms_per_structure.tolist()):
                results.append(_evaluation(result))
        return results

    __call__ = calculate


def _evaluation(result: StructureOutput | StructureError) -> Evaluation | StructureFailed:
    if isinstance(result, StructureError):
        return StructureFailed(result.code.value, result.message)
    return Evaluation(
        energy=float("nan") if result.energy is None else result.energy,
        forces=result.forces,  # type: ignore[arg-type]
        stress=result.stress,  # type: ignore[arg-type]
    )
