"""The harness's conformance kit run against a real MACE server (tiny model, float64)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ase import Atoms
from ase.build import bulk
from ase.data import chemical_symbols

from umlip_mace import MACEPotential
from umlip_serve import Settings
from umlip_serve.conformance import (
    ConformanceSuite,
    ConformanceTarget,
    StressResolutionCheck,
    remote_calculate,
    strained_and_rattled,
)
from umlip_wire.process import ServiceProcess


def conformance_structures(frames: list[Atoms]) -> list[Atoms]:
    """Three MPtrj cells of 9, 2 and 10 atoms, strained and rattled."""
    # Na5As4 (triclinic), TaW, CsRuO3 perovskite doubled
    return strained_and_rattled([frames[0], frames[5], frames[8].copy() * (2, 1, 1)])


def unsupported_structure(supported: frozenset[int]) -> Atoms:
    """An fcc crystal of a noble gas the model was not trained on."""
    z = next(z for z in (54, 36, 18, 10, 2) if z not in supported)
    return bulk(chemical_symbols[z], "fcc", a=6.0)


def mace_target(
    checkpoint: str | Path, service: ServiceProcess, frames: list[Atoms]
) -> ConformanceTarget:
    """The conformance target of a server running ``checkpoint`` (a MACE file, float64)."""
    potential = MACEPotential(Settings(checkpoint=str(checkpoint), dtype="float64"))
    info = potential.load()
    return ConformanceTarget(
        calculate=remote_calculate(service.target),
        potential=potential,
        structures=conformance_structures(frames),
        unsupported=unsupported_structure(info.supported_atomic_numbers),
        fd_atol_forces=1e-6,
        fd_atol_stress=1e-7,
    )


class TestMACEConformance(ConformanceSuite, StressResolutionCheck):
    """MACE passes every conformance check through a real server process."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(
        cls, mace_service: ServiceProcess, tiny_model: Path, training_frames: list[Atoms]
    ) -> Iterator[ConformanceTarget]:
        yield mace_target(tiny_model, mace_service, training_frames)
