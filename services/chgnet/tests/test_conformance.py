"""The harness's conformance kit run against a real CHGNet server process.

CHGNet runs in float32, so the finite-difference steps and tolerances are float32-sized;
:meth:`TestCHGNetConformance.test_stress_check_catches_wrong_conventions` proves that,
on these structures, the stress check still fails for a wrong sign, a wrong Voigt order
or a GPa/eV/Å^3 mix-up.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from ase import Atoms

from umlip_chgnet import CHGNetPotential
from umlip_serve.conformance import (
    Calculate,
    ConformanceSuite,
    ConformanceTarget,
    WrongStressConventionsCheck,
    low_symmetry_crystals,
    remote_calculate,
)
from umlip_wire.process import ServiceProcess

FD_STRAIN = 1e-3
FD_ATOL_STRESS = 1e-4  # eV/Å^3 (0.016 GPa); measured FD error <= 4e-5


def conformance_structures() -> list[Atoms]:
    """Low-symmetry cells of 8, 2 and 16 atoms with distinct, nonzero shear stresses.

    The GaAs cell is left-handed (negative determinant): chgnet's own stress has the
    wrong sign there, which the adapter corrects.
    """
    return low_symmetry_crystals()


def chgnet_target(calculate: Calculate, potential: CHGNetPotential) -> ConformanceTarget:
    """The conformance target of a CHGNet server (float32 steps and tolerances)."""
    return ConformanceTarget(
        calculate=calculate,
        potential=potential,
        structures=conformance_structures(),
        unsupported=Atoms("Am", cell=np.eye(3) * 3.5, pbc=True),  # Z = 95 > 94
        atol_batch=1e-4,
        fd_displacement=5e-3,
        fd_atol_forces=5e-3,
        fd_strain=FD_STRAIN,
        fd_atol_stress=FD_ATOL_STRESS,
    )


class TestCHGNetConformance(ConformanceSuite, WrongStressConventionsCheck):
    """CHGNet passes every conformance check through a real server process."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(
        cls, service: ServiceProcess, potential: CHGNetPotential
    ) -> Iterator[ConformanceTarget]:
        yield chgnet_target(remote_calculate(service.target, timeout_s=600), potential)
