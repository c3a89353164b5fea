"""Health, graceful shutdown, loading state and the error-to-status mapping."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
from ase.build import bulk
from grpc_health.v1 import health_pb2, health_pb2_grpc

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve import (
    ModelInfo,
    Potential,
    Property,
    Settings,
    StructureBatch,
    StructureOutput,
    StructureResult,
    atoms_to_batch,
)
from umlip_serve.server import create_server, load_into
from umlip_wire.codec import encode_batch
from umlip_wire.process import ServiceProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FaultyPotential(Potential):
    """Fault injection: a potential whose calculate raises what the test asks for."""

    name = "faulty"

    def __init__(self, settings: Settings, error: Exception | None = None) -> None:
        super().__init__(settings)
        self.error = error
        self.loaded = threading.Event()

    def load(self) -> ModelInfo:
        self.loaded.wait(timeout=30)
        return ModelInfo(
            model_version="0", checkpoint_name="none", supported_atomic_numbers=frozenset({29})
        )

    def calculate(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        if self.error is not None:
            raise self.error
        return [
            StructureOutput(energy=0.0, forces=np.zeros((n, 3)), stress=np.zeros(6))
            for n in batch.atoms_per_structure
        ]


def request() -> pb.CalculateRequest:
    return pb.CalculateRequest(batch=encode_batch(atoms_to_batch([bulk("Cu", "fcc", a=3.6)])))


def start_in_process(error: Exception | None) -> tuple[grpc.Server, FaultyPotential, int, object]:
    potential = FaultyPotential(Settings(port=0), error)
    server, port, servicer, health_servicer = create_server(potential, potential.settings)
    server.start()
    return server, potential, port, (servicer, health_servicer)


def test_not_serving_and_unavailable_until_loaded() -> None:
    server, potential, port, (servicer, health_servicer) = start_in_process(None)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == NOT_SERVING
            stub = pb_grpc.PotentialServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Calculate(request(), timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "loading" in caught.value.details()
            potential.loaded.set()
            batcher = load_into(potential, potential.settings, servicer, health_servicer)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
            assert len(stub.Calculate(request(), timeout=5).results) == 1
            batcher.close()
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    ("error", "code", "text"),
    [
        (RuntimeError("secret internal detail"), grpc.StatusCode.INTERNAL, "internal error"),
        (MemoryError(), grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory"),
        (
            RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "out of memory",
        ),
    ],
    ids=["internal", "memory-error", "cuda-oom"],
)
def test_errors_map_to_status_codes(
    error: Exception, code: grpc.StatusCode, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, potential, port, (servicer, health_servicer) = start_in_process(error)
    potential.loaded.set()
    batcher = load_into(potential, potential.settings, servicer, health_servicer)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PotentialServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Calculate(request(), timeout=5)
    finally:
        batcher.close()
        server.stop(0)
    assert caught.value.code() is code
    assert text in caught.value.details()
    assert "secret" not in caught.value.details() and "Traceback" not in caught.value.details()
    if code is grpc.StatusCode.INTERNAL:
        assert "secret internal detail" in caplog.text  # the traceback goes to the log


def test_sigterm_turns_not_serving_then_stops_gracefully(emt_python: Path) -> None:
    env = {"UMLIP_GRACE_PERIOD_S": "5"}
    service = ServiceProcess(python=emt_python, module="umlip_emt", env=env).start()
    statuses: list[int] = []
    with grpc.insecure_channel(service.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses.append(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)
        watcher = health.Watch(health_pb2.HealthCheckRequest(), timeout=20)
        assert next(watcher).status == SERVING
        stopper = threading.Thread(target=service.stop)
        stopper.start()
        with contextlib.suppress(grpc.RpcError):  # the stream ends when the server goes
            statuses.extend(update.status for update in watcher)
        stopper.join()
    assert statuses[0] == SERVING
    assert NOT_SERVING in statuses[1:], statuses
    assert service.stop() == 0
    assert "stopping: NOT_SERVING" in service.log_tail()


def test_process_restart_is_unavailable_then_serving(emt_python: Path) -> None:
    """The client-visible sequence a restart produces: UNAVAILABLE, then answers."""
    with ServiceProcess(python=emt_python, module="umlip_emt") as service:
        target = service.target
        time.sleep(0.1)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.PotentialServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Calculate(request(), timeout=2)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
