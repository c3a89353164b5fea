"""Sanity of CHGNet 0.3.0 against DFT: 100 small MPtrj frames through the real server.

The frames are the first 100 of ``mptrj-random-1k.xyz`` with at most 16 atoms (small
cells keep the test fast; 1009 atoms in all). Bounds are loose, about twice the values
measured when this test was written (energy 25 meV/atom after MP2020 corrections,
forces 0.050 eV/Å, stress 0.45 GPa; 2.3 GPa with the stress sign flipped).
"""

from __future__ import annotations

from ase import Atoms
from mptrj_reference import mp2020_corrections

from umlip_serve.conformance import Calculate
from umlip_serve.testing import DftErrors


def test_accuracy_against_dft(remote: Calculate, mptrj_frames: list[Atoms]) -> None:
    frames = [atoms for atoms in mptrj_frames if len(atoms) <= 16][:100]
    errors = DftErrors.of(
        remote(frames), frames, mp2020_corrections(frames), skip_nan_energies=True
    )
    print(errors)
    assert errors.energy_mae < 0.05
    assert errors.force_mae < 0.1
    assert errors.stress_mae < 1.0
    # the file and the service share ASE's sign
    assert errors.flipped_stress_mae > 3 * errors.stress_mae
