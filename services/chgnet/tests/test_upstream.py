"""The service agrees with chgnet's own ASE calculator on real MPtrj frames."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from chgnet.model import CHGNet
from chgnet.model.dynamics import CHGNetCalculator

from umlip_serve import StructureOutput
from umlip_serve.conformance import Calculate


def test_matches_upstream_ase_calculator(remote: Calculate, mptrj_frames: list[Atoms]) -> None:
    frames = mptrj_frames[:10]
    results = remote(frames)  # one batched call through the server
    calculator = CHGNetCalculator(
        model=CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False), use_device="cpu"
    )
    for atoms, result in zip(frames, results, strict=True):
        assert isinstance(result, StructureOutput)
        reference = atoms.copy()
        reference.calc = calculator
        # float32 model; batching changes the summation order only.
        np.testing.assert_allclose(
            result.energy, reference.get_potential_energy(), atol=1e-5 * len(atoms)
        )
        np.testing.assert_allclose(result.forces, reference.get_forces(), atol=1e-4)
        np.testing.assert_allclose(result.stress, reference.get_stress(voigt=True), atol=1e-5)
