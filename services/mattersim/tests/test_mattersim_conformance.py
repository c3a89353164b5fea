"""The harness's conformance kit run against a real MatterSim server (tiny model).

MatterSim runs in float32 only, so the tolerances suit float32 (energies of ~-50 eV
carry ~1e-5 eV of rounding): finite differences use larger steps, and the structures'
stresses are checked to be far above the stress tolerance, so that a wrong sign or Voigt
order still fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.data import chemical_symbols

from umlip_mattersim import MatterSimPotential
from umlip_serve import Settings, StructureOutput
from umlip_serve.conformance import ConformanceSuite, ConformanceTarget, remote_calculate
from umlip_wire.process import ServiceProcess

#: Strain applied to every cell so that all stress components are large and distinct.
DEFORMATION = np.array([[0.97, 0.02, 0.01], [0.0, 0.99, 0.03], [0.015, 0.0, 1.02]])


def conformance_structures(frames: list[Atoms]) -> list[Atoms]:
    """Three MPtrj cells of 3, 4 and 8 atoms, strained and rattled.

    They are picked for the tiny model's clear shear response (see
    ``test_stresses_resolve_sign_and_voigt_order``).
    """
    rng = np.random.default_rng(7)
    # NbPt2, CePd2Pt, CeCrMg6
    structures = [frames[6].copy(), frames[9].copy(), frames[7].copy()]
    for atoms in structures:
        atoms.calc = None
        atoms.set_cell(atoms.cell.array @ DEFORMATION, scale_atoms=True)
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
    return structures


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


class TestMatterSimConformance(ConformanceSuite):
    """MatterSim passes every conformance check through a real server process."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(
        cls, mattersim_service: ServiceProcess, tiny_model: Path, training_frames: list[Atoms]
    ) -> Iterator[ConformanceTarget]:
        yield mattersim_target(tiny_model, mattersim_service, training_frames)

    def test_stresses_resolve_sign_and_voigt_order(
        self, conformance_target: ConformanceTarget
    ) -> None:
        """The structures' stresses are large and distinct enough for the stress check.

        Every component exceeds the tolerance (a sign error cannot hide), and every pair
        of components differs by more than twice the tolerance in some structure (nor
        can two swapped Voigt components).
        """
        tol = conformance_target.fd_atol_stress
        results = conformance_target.calculate(conformance_target.structures)
        stresses = np.array([r.stress for r in results if isinstance(r, StructureOutput)])
        assert stresses.shape == (len(results), 6)
        assert np.abs(stresses).min() > 4 * tol
        gaps = np.abs(stresses[:, :, None] - stresses[:, None, :]).max(axis=0)
        assert gaps[np.triu_indices(6, 1)].min() > 2 * tol
