"""The harness's conformance kit run against a real MatterSim server (tiny model).

MatterSim runs in float32 only, so the tolerances suit float32 (energies of ~-50 eV
carry ~1e-5 eV of rounding): finite differences use larger steps, and the structures'
stresses are checked to be far above the stress tolerance, so that a wrong sign or Voigt
order still fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ase import Atoms
from ase.build import bulk
from ase.data import chemical_symbols

from umlip_mattersim import MatterSimPotential
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
    """Three MPtrj cells of 3, 4 and 8 atoms, strained and rattled.

    They are picked for the tiny model's clear shear response (see
    ``test_stresses_resolve_sign_and_voigt_order``).
    """
    # NbPt2, CePd2Pt, CeCrMg6
    return strained_and_rattled([frames[6], frames[9], frames[7]])


#: float32 tolerances (see the module docstring).
TOLERANCES = {
    "atol_batch": 1e-4,
    "fd_displacement": 1e-2,
    "fd_strain": 2e-3,
    "fd_atol_forces": 2e-3,
    "fd_atol_stress": 5e-5,
}


def mattersim_target(
    checkpoint: Path, service: ServiceProcess, frames: list[Atoms]
) -> ConformanceTarget:
    """The conformance target of a server running ``checkpoint`` (a MatterSim file)."""
    potential = MatterSimPotential(Settings(checkpoint=str(checkpoint), dtype="float32"))
    info = potential.load()
    beyond = max(info.supported_atomic_numbers) + 1  # 95 (Am) for max_z = 94
    return ConformanceTarget(
        calculate=remote_calculate(service.target),
        potential=potential,
        structures=conformance_structures(frames),
        unsupported=bulk(chemical_symbols[beyond], "fcc", a=4.9),
        **TOLERANCES,
    )


class TestMatterSimConformance(ConformanceSuite, StressResolutionCheck):
    """MatterSim passes every conformance check through a real server process."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(
        cls, mattersim_service: ServiceProcess, tiny_model: Path, training_frames: list[Atoms]
    ) -> Iterator[ConformanceTarget]:
        yield mattersim_target(tiny_model, mattersim_service, training_frames)
