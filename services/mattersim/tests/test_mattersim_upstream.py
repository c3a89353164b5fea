"""The server agrees with mattersim's own ASE calculator on real MPtrj frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read
from mattersim.forcefield import MatterSimCalculator
from tiny_mattersim import DATA

from umlip_serve import StructureOutput
from umlip_serve.conformance import remote_calculate
from umlip_wire.process import ServiceProcess


def mptrj_frames(count: int = 10, max_atoms: int = 40) -> list[Atoms]:
    """The first ``count`` MPtrj frames past the training ones, of several sizes."""
    frames = [a for a in read(DATA, index="200:") if len(a) <= max_atoms]
    return frames[:count]


def test_server_matches_mattersim_calculator(
    mattersim_service: ServiceProcess, tiny_model: Path
) -> None:
    calculator = MatterSimCalculator(load_path=str(tiny_model), device="cpu")
    frames = mptrj_frames()
    assert len({len(a) for a in frames}) > 3, "frames of several sizes"
    results = remote_calculate(mattersim_service.target)(frames)  # one batched call
    for atoms, result in zip(frames, results, strict=True):
        assert isinstance(result, StructureOutput), result
        reference = atoms.copy()
        reference.calc = calculator
        energy = reference.get_potential_energy()
        np.testing.assert_allclose(result.energy, energy, rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(result.forces, reference.get_forces(), atol=1e-4)
        np.testing.assert_allclose(result.stress, reference.get_stress(voigt=True), atol=1e-5)
    stresses = [np.abs(r.stress).max() for r in results if isinstance(r, StructureOutput)]
    assert max(stresses) > 1e-3, "the trained model gives real cells nonzero stress"
