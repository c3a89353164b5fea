"""The harness's conformance kit run against a real MACE server (tiny model, float64)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.data import chemical_symbols

from umlip_mace import MACEPotential
from umlip_serve import Settings, StructureOutput
from umlip_serve.conformance import ConformanceSuite, ConformanceTarget, remote_calculate
from umlip_wire.process import ServiceProcess

#: Strain applied to every cell so that all stress components are large and distinct.
DEFORMATION = np.array([[0.97, 0.02, 0.01], [0.0, 0.99, 0.03], [0.015, 0.0, 1.02]])


def conformance_structures(frames: list[Atoms]) -> list[Atoms]:
    """Three MPtrj cells of 9, 2 and 10 atoms, strained and rattled."""
    rng = np.random.default_rng(7)
    # Na5As4 (triclinic), TaW, CsRuO3 perovskite doubled
    structures = [frames[0].copy(), frames[5].copy(), frames[8].copy() * (2, 1, 1)]
    for atoms in structures:
        atoms.calc = None
        atoms.set_cell(atoms.cell.array @ DEFORMATION, scale_atoms=True)
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
    return structures


def unsupported_structure(supported: frozenset[int]) -> Atoms:
    """An fcc crystal of a noble gas the model was not trained on."""
    z = next(z for z in (54, 36, 18, 10, 2) if z not in supported)
    return bulk(chemical_symbols[z], "fcc", a=6.0)


class TestMACEConformance(ConformanceSuite):
    """MACE passes every conformance check through a real server process."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(
        cls, mace_service: ServiceProcess, tiny_model: Path, training_frames: list[Atoms]
    ) -> Iterator[ConformanceTarget]:
        potential = MACEPotential(Settings(checkpoint=str(tiny_model), dtype="float64"))
        info = potential.load()
        yield ConformanceTarget(
            calculate=remote_calculate(mace_service.target),
            potential=potential,
            structures=conformance_structures(training_frames),
            unsupported=unsupported_structure(info.supported_atomic_numbers),
            fd_atol_forces=1e-6,
            fd_atol_stress=1e-7,
        )

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
