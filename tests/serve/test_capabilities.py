"""Capabilities a potential class declares, enforced by the harness, not the adapter.

- ``supported_dtypes``: the model's preferred precision by default; an explicit
  ``UMLIP_DTYPE`` it cannot run in stops the service at start with a clear message.
- ``max_atoms_per_pass``: caps the served atom budget (GetModelInfo, request limit and
  merged model calls).
- ``UMLIP_MAX_CONCURRENT_CALLS``: calls beyond it are refused at once with
  RESOURCE_EXHAUSTED, which the orchestrator's client retries.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from ase import Atoms
from scripted_potential import ScriptedPotential, scripted_server

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip_orchestrator.client import PotentialClient
from umlip_serve import CalculatorSetupError, Property, Settings, StructureBatch
from umlip_serve.potential import resolve_settings
from umlip_wire.codec import encode_batch, encode_properties
from umlip_wire.process import ServiceProcess, ServiceStartError


class Float32Only(ScriptedPotential):
    name = "float32-only"
    supported_dtypes = ("float32",)
    max_atoms_per_pass = 6


def copper_batch(count: int, atoms: int = 2) -> StructureBatch:
    """``count`` Cu structures of ``atoms`` atoms, tagged by their first x coordinate."""
    positions = []
    for tag in range(count):
        block = np.array([[float(tag) + 3.0 * k, 0.0, 0.0] for k in range(atoms)])
        positions.append(block)
    return StructureBatch.from_arrays(
        atomic_numbers=[np.full(atoms, 29)] * count,
        positions=positions,
        cells=[np.eye(3) * 40.0] * count,
        pbc=[[True] * 3] * count,
    )


def copper(tag: float) -> Atoms:
    """One Cu atom whose scripted energy is ``tag``."""
    return Atoms("Cu", positions=[[tag, 1.0, 1.0]], cell=np.eye(3) * 40.0, pbc=True)


def test_default_dtype_is_the_models_preferred_and_others_are_refused() -> None:
    assert resolve_settings(Float32Only, Settings()).dtype == "float32"
    assert resolve_settings(ScriptedPotential, Settings()).dtype == "float64"
    assert resolve_settings(ScriptedPotential, Settings(dtype="float32")).dtype == "float32"
    with pytest.raises(CalculatorSetupError, match="float32 only, not UMLIP_DTYPE=float64"):
        resolve_settings(Float32Only, Settings(dtype="float64"))


def test_atom_budget_per_pass_caps_the_served_budget() -> None:
    assert resolve_settings(Float32Only, Settings(max_batch_atoms=100)).max_batch_atoms == 6
    assert resolve_settings(Float32Only, Settings(max_batch_atoms=4)).max_batch_atoms == 4
    settings = Settings(port=0, max_batch_atoms=100, batch_wait_ms=200)
    potential = Float32Only(settings)
    with scripted_server(settings, potential=potential) as (stub, _, batcher, _):
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert info.max_batch_atoms == 6
        assert info.dtype == pb.DTYPE_FLOAT32
        too_big = pb.CalculateRequest(
            batch=encode_batch(copper_batch(4)), properties=encode_properties([Property.ENERGY])
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.Calculate(too_big, timeout=10)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        # Three concurrent 2-atom calls: merged model calls hold at most 6 atoms.
        small = pb.CalculateRequest(
            batch=encode_batch(copper_batch(1)), properties=encode_properties([Property.ENERGY])
        )
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda _: stub.Calculate(small, timeout=30), range(6)))
        assert all(len(answer.results) == 1 for answer in answers)
        assert potential.log.largest_call_atoms <= 6
        assert batcher.stats.merged_calls >= 1


def test_an_explicit_dtype_the_model_cannot_run_stops_the_service(emt_python: Path) -> None:
    service = ServiceProcess(
        python=emt_python, module="umlip_emt", env={"UMLIP_DTYPE": "float32"}, start_timeout_s=60
    )
    with pytest.raises(ServiceStartError):
        service.start()
    log = service.log_path.read_text()
    assert "emt runs in float64 only, not UMLIP_DTYPE=float32" in log
    assert "Traceback" not in log
    assert service.returncode_if_exited() == 2


def test_calls_over_the_concurrency_limit_are_refused_and_retried_by_the_client() -> None:
    settings = Settings(port=0, max_workers=1, max_concurrent_calls=2, dynamic_batching=False)
    request = pb.CalculateRequest(
        batch=encode_batch(copper_batch(1)), properties=encode_properties([Property.ENERGY])
    )
    with scripted_server(settings, delay_s=0.3) as (stub, _, _, target):
        codes: list[grpc.StatusCode] = []
        lock = threading.Lock()

        def raw_call(_: int) -> None:
            try:
                stub.Calculate(request, timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
                assert "Concurrent RPC limit exceeded" in error.details()
            with lock:
                codes.append(code)

        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(raw_call, range(6)))
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1  # refused, not queued
        assert codes.count(grpc.StatusCode.OK) >= 1

        started = time.monotonic()
        with (
            PotentialClient(target, timeout_s=30) as client,
            ThreadPoolExecutor(max_workers=6) as pool,
        ):
            answers = list(
                pool.map(lambda tag: client.calculate([copper(tag)], [Property.ENERGY]), range(6))
            )
        assert [answer[0].energy for answer in answers] == [float(t) for t in range(6)]
        assert time.monotonic() - started < 25
