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

from collections.abc import Iterator

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

from umlip_hienet import HIENetPotential
from umlip_serve.conformance import (
    ConformanceSuite,
    ConformanceTarget,
    WrongStressConventionsCheck,
    low_symmetry_crystals,
    remote_calculate,
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
    return low_symmetry_crystals(nacl_lattice=5.30)


def test_structures_clear_the_cutoff() -> None:
    for atoms in conformance_structures():
        distances = neighbor_list("d", atoms, 6.0)
        assert np.abs(distances - 5.0).min() > CUTOFF_CLEARANCE, atoms.get_chemical_formula()


class TestHIENetConformance(ConformanceSuite, WrongStressConventionsCheck):
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
