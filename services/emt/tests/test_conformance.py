"""The harness's conformance kit run against a real EMT server process."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from umlip_emt import EMTPotential
from umlip_serve import Settings
from umlip_serve.conformance import ConformanceSuite, ConformanceTarget, remote_calculate
from umlip_wire.process import ServiceProcess


def emt_structures() -> list[Atoms]:
    """Supported structures of different sizes, one of them low-symmetry."""
    rng = np.random.default_rng(7)
    sheared = bulk("Cu", "fcc", a=3.62, cubic=True)
    sheared.set_cell(
        sheared.cell.array @ np.array([[1.01, 0.02, 0.0], [0.0, 0.99, 0.03], [0.01, 0.0, 1.0]]),
        scale_atoms=True,
    )
    sheared.positions += rng.normal(scale=0.05, size=sheared.positions.shape)
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True)
    alloy.numbers[0] = 79  # L1_2 Cu3Au
    alloy.positions += rng.normal(scale=0.03, size=alloy.positions.shape)
    return [sheared, bulk("Al", "fcc", a=4.0), alloy * (2, 1, 1)]


class TestEMTConformance(ConformanceSuite):
    """EMT passes every conformance check through a real server process."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(cls) -> Iterator[ConformanceTarget]:
        with ServiceProcess(python=sys.executable, module="umlip_emt") as service:
            potential = EMTPotential(Settings())
            potential.load()
            yield ConformanceTarget(
                calculate=remote_calculate(service.target),
                potential=potential,
                structures=emt_structures(),
                unsupported=bulk("Xe", "fcc", a=6.2),
            )
