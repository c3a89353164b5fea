"""The server agrees with mace-torch's own ASE calculator on real MPtrj frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read
from mace.calculators import MACECalculator
from tiny_mace import DATA

from umlip_serve import StructureOutput
from umlip_serve.conformance import remote_calculate
from umlip_wire.process import ServiceProcess


def supported_frames(supported: set[int], count: int = 10, max_atoms: int = 40) -> list[Atoms]:
    """The first ``count`` MPtrj frames (skipping the training ones) the model can handle."""
    frames = [
        a
        for a in read(DATA, index="200:")
        if len(a) <= max_atoms and set(a.numbers.tolist()) <= supported
    ]
    assert len(frames) >= count, "not enough MPtrj frames with the tiny model's elements"
    return frames[:count]


def test_server_matches_mace_calculator(mace_service: ServiceProcess, tiny_model: Path) -> None:
    calculator = MACECalculator(model_paths=str(tiny_model), device="cpu", default_dtype="float64")
    frames = supported_frames({int(z) for z in calculator.z_table.zs})
    results = remote_calculate(mace_service.target)(frames)  # one batched call
    assert len({len(a) for a in frames}) > 3, "frames of several sizes"
    for atoms, result in zip(frames, results, strict=True):
        assert isinstance(result, StructureOutput), result
        reference = atoms.copy()
        reference.calc = calculator
        np.testing.assert_allclose(result.energy, reference.get_potential_energy(), atol=1e-8)
        np.testing.assert_allclose(result.forces, reference.get_forces(), atol=1e-8)
        np.testing.assert_allclose(result.stress, reference.get_stress(voigt=True), atol=1e-9)
    stresses = [np.abs(r.stress).max() for r in results if isinstance(r, StructureOutput)]
    assert max(stresses) > 1e-3, "the trained model gives real cells nonzero stress"
