"""The harness's conformance kit run against a real HIENet server process.

HIENet runs in float32, so the finite-difference steps and tolerances are float32-sized;
:meth:`TestHIENetConformance.test_stress_check_catches_wrong_conventions` proves that,
on these structures, the stress check still fails for a wrong sign, a wrong Voigt order
or a GPa/eV/Å^3 mix-up.

HIENet's energy is discontinuous where a neighbour crosses its 5 Å cutoff (its invariant
attention layers' messages do not vanish there; see
``test_upstream.py::test_energy_jumps_at_the_cutoff_as_upstream``), so finite
differences are only meaningful on structures with no pair distance within a step of
5 Å: the structures below keep every distance at least :data:`CUTOFF_CLEARANCE` away
from it (``test_structures_clear_the_cutoff``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from umlip_hienet import HIENetPotential
from umlip_serve import StructureOutput
from umlip_serve.conformance import (
    ConformanceSuite,
    ConformanceTarget,
    remote_calculate,
    strained,
)
from umlip_wire.process import ServiceProcess

FD_STRAIN = 1e-3
FD_ATOL_STRESS = 1e-4  # eV/Å^3 (0.016 GPa)
#: Least distance between any pair distance of the structures and the 5 Å cutoff, Å
#: (finite-difference steps move distances by at most ~0.01 Å).
CUTOFF_CLEARANCE = 0.1


def conformance_structures() -> list[Atoms]:
    """Low-symmetry cells of 8, 2 and 16 atoms with distinct, nonzero shear stresses.

    The GaAs cell is left-handed (negative determinant). NaCl is compressed (a = 5.30 Å,
    not 5.64 Å) so that none of its distances lies near the 5 Å cutoff.
    """
    rng = np.random.default_rng(7)
    nacl = bulk("NaCl", "rocksalt", a=5.30, cubic=True)
    shear = np.array([[1.01, 0.0, 0.0], [0.01, 0.99, 0.0], [0.03, 0.08, 1.0]])
    nacl.set_cell(nacl.cell.array @ shear, scale_atoms=True)
    nacl.positions += rng.normal(scale=0.05, size=nacl.positions.shape)
    gaas = bulk("GaAs", "zincblende", a=5.75)
    deformation = np.array([[1.0, 0.05, 0.0], [0.0, 1.01, 0.02], [0.0, 0.0, 0.99]])
    gaas.set_cell(gaas.cell.array[[1, 0, 2]] @ deformation, scale_atoms=True)
    gaas.positions += rng.normal(scale=0.04, size=gaas.positions.shape)
    silicon = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 1, 1)
    silicon.positions += rng.normal(scale=0.04, size=silicon.positions.shape)
    return [nacl, gaas, silicon]


def test_structures_clear_the_cutoff() -> None:
    for atoms in conformance_structures():
        distances = neighbor_list("d", atoms, 6.0)
        assert np.abs(distances - 5.0).min() > CUTOFF_CLEARANCE, atoms.get_chemical_formula()


def wrong_conventions(stress: np.ndarray) -> dict[str, np.ndarray]:
    """Stresses an adapter with a sign, order or unit bug would report."""
    wrong = {"opposite sign": -stress, "GPa not eV/Å^3": stress * 160.21766208}
    for order in itertools.permutations((3, 4, 5)):
        if order != (3, 4, 5):
            permuted = stress[[0, 1, 2, *order]]
            wrong[f"shear order {order}"] = permuted
            wrong[f"shear order {order}, opposite sign"] = -permuted
    return wrong


class TestHIENetConformance(ConformanceSuite):
    """HIENet passes every conformance check through a real server process."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(
        cls, service: ServiceProcess, potential: HIENetPotential
    ) -> Iterator[ConformanceTarget]:
        yield ConformanceTarget(
            calculate=remote_calculate(service.target, timeout_s=600),
            potential=potential,
            structures=conformance_structures(),
            unsupported=Atoms("Rn", cell=np.eye(3) * 4.5, pbc=True),  # not among its 89
            atol_batch=1e-4,
            fd_displacement=5e-3,
            fd_atol_forces=5e-3,
            fd_strain=FD_STRAIN,
            fd_atol_stress=FD_ATOL_STRESS,
        )

    def test_stress_check_catches_wrong_conventions(
        self, conformance_target: ConformanceTarget
    ) -> None:
        worst: dict[str, float] = {}
        for atoms in conformance_target.structures:
            result = conformance_target.calculate([atoms])[0]
            assert isinstance(result, StructureOutput) and result.stress is not None
            deformed = [strained(atoms, v, s * FD_STRAIN) for v in range(6) for s in (1, -1)]
            energies = np.array([r.energy for r in conformance_target.calculate(deformed)])
            pairs = energies.reshape(6, 2)
            numeric = (pairs[:, 0] - pairs[:, 1]) / (2 * FD_STRAIN) / atoms.get_volume()
            np.testing.assert_allclose(result.stress, numeric, atol=FD_ATOL_STRESS)
            for name, wrong in wrong_conventions(result.stress).items():
                worst[name] = max(worst.get(name, 0.0), float(np.abs(wrong - numeric).max()))
        blind = {name: error for name, error in worst.items() if error < 5 * FD_ATOL_STRESS}
        assert not blind, f"the stress check would miss these bugs: {blind}"
