"""PotentialClient and RemoteCalculator against a real EMT server process."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from umlip_orchestrator.calculator import RemoteCalculator
from umlip_orchestrator.client import PotentialClient, ServiceError
from umlip_orchestrator.evaluation import Evaluation, StructureFailed
from umlip_wire.process import ServiceProcess


def test_info_describes_the_service(emt_service: ServiceProcess) -> None:
    with PotentialClient(emt_service.target) as client:
        info = client.info()
    assert info.model_name == "emt"
    assert {13, 29, 28, 79} <= info.supported_atomic_numbers
    assert info.dtype == "float64" and info.max_batch_atoms > 0
    assert "ase" in info.package_versions


def test_results_equal_in_process_emt(emt_service: ServiceProcess) -> None:
    structures = [bulk(s, "fcc", a=a) * (1, 1, k) for s, a, k in [("Cu", 3.6, 1), ("Ni", 3.5, 3)]]
    for atoms in structures:
        atoms.rattle(0.01, seed=1)
    with PotentialClient(emt_service.target) as client:
        results = client.calculate(structures)
    for atoms, result in zip(structures, results, strict=True):
        reference = atoms.copy()
        reference.calc = EMT()
        assert isinstance(result, Evaluation)
        assert result.energy == pytest.approx(reference.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(result.forces, reference.get_forces(), atol=1e-12)
        np.testing.assert_allclose(result.stress, reference.get_stress(), atol=1e-12)


def test_oversized_batch_is_split(emt_python: Path, emt_service: ServiceProcess) -> None:
    env = {"UMLIP_MAX_BATCH_ATOMS": "20"}
    structures = [
        bulk("Cu", "fcc", a=3.6 + 0.01 * k, cubic=True) * (k % 2 + 1, 1, 1) for k in range(12)
    ]
    structures.insert(5, bulk("Xe", "fcc", a=6.0))
    with (
        ServiceProcess(python=emt_python, module="umlip_emt", env=env) as service,
        PotentialClient(service.target) as client,
    ):
        results = client.calculate(structures)
        calls = client.calls
    with PotentialClient(emt_service.target) as unsplit_client:
        unsplit = unsplit_client.calculate(structures)
        assert unsplit_client.calls == 2  # GetModelInfo + one Calculate
    # 12 structures of 4 or 8 atoms (72 atoms) + 1 atom cannot go in one 20-atom call.
    assert calls >= 1 + 4
    assert len(results) == 13
    assert isinstance(results[5], StructureFailed) and results[5].code == "UNSUPPORTED_ELEMENT"
    for index, (split, whole) in enumerate(zip(results, unsplit, strict=True)):
        if index != 5:
            assert isinstance(split, Evaluation)
            assert split.energy == whole.energy  # type: ignore[union-attr]
            np.testing.assert_array_equal(split.forces, whole.forces)  # type: ignore[union-attr]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_retries_while_unavailable_then_succeeds(emt_python: Path) -> None:
    port = free_port()
    service = ServiceProcess(python=emt_python, module="umlip_emt", env={"UMLIP_PORT": str(port)})
    starter = threading.Timer(1.0, service.start)
    starter.start()
    try:
        with PotentialClient(f"127.0.0.1:{port}", max_retries=30, backoff_s=0.1) as client:
            started = time.monotonic()
            (result,) = client.calculate([bulk("Cu", "fcc", a=3.6)])
        assert isinstance(result, Evaluation)
        assert time.monotonic() - started > 0.5  # it had to wait for the server
    finally:
        starter.join()
        service.stop()


def test_no_retry_on_invalid_argument(emt_python: Path) -> None:
    env = {"UMLIP_MAX_BATCH_ATOMS": "2"}
    with ServiceProcess(python=emt_python, module="umlip_emt", env=env) as service:
        client = PotentialClient(service.target)
        big = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms, over the limit alone
        with pytest.raises(ServiceError) as caught:
            client.calculate([big])
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert client.calls == 2  # GetModelInfo + one Calculate, no retry
        client.close()


def test_unavailable_gives_up_after_retries() -> None:
    client = PotentialClient(f"127.0.0.1:{free_port()}", max_retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(ServiceError) as caught:
        client.info()
    assert caught.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    client.close()


def test_ase_calculator_relaxation_matches_local_emt(emt_service: ServiceProcess) -> None:
    def relax(atoms, calc):  # type: ignore[no-untyped-def]
        atoms.calc = calc
        FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=0.01, steps=200)
        return atoms

    start = bulk("Cu", "fcc", a=3.5)
    with PotentialClient(emt_service.target) as client:
        remote = relax(start.copy(), RemoteCalculator(client))
    local = relax(start.copy(), EMT())
    np.testing.assert_allclose(remote.cell.array, local.cell.array, atol=1e-10)
    assert remote.get_potential_energy() == pytest.approx(local.get_potential_energy(), abs=1e-10)
