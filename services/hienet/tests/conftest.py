"""Fixtures of the HIENet service tests: one real server per session and the DFT frames."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ase import Atoms
from ase.io import read

from umlip_hienet import HIENetPotential
from umlip_serve import Settings
from umlip_serve.conformance import Calculate, remote_calculate
from umlip_wire.process import ServiceProcess

#: Shared reference data: <repo>/../shared/data (see its README).
DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data"
MPTRJ_RANDOM = DATA_DIR / "mptrj-random-1k.xyz"


@pytest.fixture(scope="session")
def service() -> Iterator[ServiceProcess]:
    """A real HIENet server (this environment's Python) on a free loopback port."""
    with ServiceProcess(python=sys.executable, module="umlip_hienet", start_timeout_s=300) as s:
        yield s


@pytest.fixture(scope="session")
def remote(service: ServiceProcess) -> Calculate:
    """Calculate through the real server (energy, forces and stress)."""
    return remote_calculate(service.target, timeout_s=600)


@pytest.fixture(scope="session")
def mptrj_frames() -> list[Atoms]:
    """The 1000 MPtrj DFT frames (fails when the shared data is absent)."""
    if not MPTRJ_RANDOM.exists():
        raise FileNotFoundError(f"reference data {MPTRJ_RANDOM} not found")
    return read(MPTRJ_RANDOM, index=":")


@pytest.fixture(scope="session")
def potential() -> HIENetPotential:
    """The adapter loaded in this process (default settings)."""
    loaded = HIENetPotential(Settings())
    loaded.load()
    return loaded
