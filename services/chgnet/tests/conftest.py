"""Fixtures of the CHGNet service tests: one real server per session and the DFT frames."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from ase import Atoms
from ase.io import read
from mptrj_reference import MPTRJ_RANDOM

from umlip_chgnet import CHGNetPotential
from umlip_serve import Settings
from umlip_serve.conformance import Calculate, remote_calculate
from umlip_wire.process import ServiceProcess


@pytest.fixture(scope="session")
def service() -> Iterator[ServiceProcess]:
    """A real CHGNet server (this environment's Python) on a free loopback port."""
    with ServiceProcess(python=sys.executable, module="umlip_chgnet", start_timeout_s=300) as s:
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
def potential() -> CHGNetPotential:
    """The adapter loaded in this process (default settings)."""
    loaded = CHGNetPotential(Settings())
    loaded.load()
    return loaded
