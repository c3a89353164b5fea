"""Property-based fuzzing of real EMT and CHGNet servers (the short CI version).

Every request, valid, mutated, truncated, garbage or at/over the size limits, gets an
answer within its deadline, never INTERNAL or UNKNOWN; OK answers hold one result per
structure; and after every request that is not valid a known good request still gets
the right energies (EMT: ASE's EMT in this process; CHGNet: its own first answer). The
long version is ``benchmarks/fuzz.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from fuzz_requests import Fuzzer, Target, cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from umlip_wire.process import ServiceProcess

#: Small limits, so that requests at and over them stay cheap.
EMT_LIMITS = {"UMLIP_MAX_BATCH_ATOMS": "100", "UMLIP_MAX_MESSAGE_BYTES": str(64 * 1024)}
CHGNET_LIMITS = {"UMLIP_MAX_BATCH_ATOMS": "48", "UMLIP_MAX_MESSAGE_BYTES": str(32 * 1024)}
DEADLINE_S = 10.0
HYPOTHESIS = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": list(HealthCheck),
}


def emt_energy(atoms: Atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return float(atoms.get_potential_energy())


def assert_clean_log(service: ServiceProcess) -> None:
    log = service.log_path.read_text(errors="replace")
    assert "Traceback" not in log, service.log_tail(80)
    assert service.returncode_if_exited() is None, service.log_tail(80)


@pytest.fixture(scope="module")
def emt_server(emt_python: Path) -> Iterator[ServiceProcess]:
    with ServiceProcess(python=emt_python, module="umlip_emt", env=EMT_LIMITS) as service:
        yield service


@pytest.fixture(scope="module")
def chgnet_server(chgnet_python: Path) -> Iterator[ServiceProcess]:
    env = {**CHGNET_LIMITS, "UMLIP_TORCH_THREADS": "1"}
    with ServiceProcess(python=chgnet_python, module="umlip_chgnet", env=env) as service:
        yield service


def fuzz(service: ServiceProcess, fuzzer: Fuzzer, target: Target, examples: int) -> None:
    @settings(max_examples=examples, **HYPOTHESIS)
    @given(st.lists(cases(target), min_size=1, max_size=8))
    def run(batch: list) -> None:
        fuzzer.run(batch)

    run()
    print(fuzzer.report())
    assert_clean_log(service)


def test_fuzz_emt(emt_server: ServiceProcess) -> None:
    with grpc.insecure_channel(emt_server.target) as channel:
        fuzzer = Fuzzer(channel, reference=emt_energy, timeout_s=DEADLINE_S)
        fuzz(emt_server, fuzzer, Target.of(channel, max_valid_atoms=8), examples=350)
    assert fuzzer.requests >= 1000
    assert fuzzer.codes["INVALID_ARGUMENT"] > 0 and fuzzer.codes["RESOURCE_EXHAUSTED"] > 0


def test_fuzz_chgnet(chgnet_server: ServiceProcess) -> None:
    with grpc.insecure_channel(chgnet_server.target) as channel:
        # float32: the probe's energies may move in the last bits between model calls.
        fuzzer = Fuzzer(channel, timeout_s=DEADLINE_S, rtol=1e-5, atol=1e-5)
        fuzz(chgnet_server, fuzzer, Target.of(channel, max_valid_atoms=8), examples=30)
    assert fuzzer.requests >= 100
