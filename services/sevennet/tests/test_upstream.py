"""The service agrees with sevenn's own ASE calculator on real MPtrj frames."""

from __future__ import annotations

from ase import Atoms
from sevenn.calculator import SevenNetCalculator

from umlip_serve.conformance import Calculate
from umlip_serve.testing import assert_matches_calculator


def test_matches_upstream_ase_calculator(remote: Calculate, mptrj_frames: list[Atoms]) -> None:
    frames = mptrj_frames[:10]
    results = remote(frames)  # one batched call through the server
    calculator = SevenNetCalculator("7net-0", device="cpu")
    # float32 model; batching changes the summation order only.
    assert_matches_calculator(
        results, frames, calculator, energy_atol_per_atom=1e-5, forces_atol=1e-4, stress_atol=1e-5
    )
