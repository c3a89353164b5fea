"""Sanity of CHGNet 0.3.0 against DFT: 100 small MPtrj frames through the real server.

The frames are the first 100 of ``mptrj-random-1k.xyz`` with at most 16 atoms (small
cells keep the test fast; 1009 atoms in all). Bounds are loose, about twice the values
measured when this test was written (energy 25 meV/atom after MP2020 corrections,
forces 0.050 eV/Å, stress 0.45 GPa; 2.3 GPa with the stress sign flipped).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from mptrj_reference import mp2020_corrections

from umlip_serve import StructureOutput
from umlip_serve.conformance import Calculate

GPA_PER_EV_PER_A3 = 160.21766208


def test_accuracy_against_dft(remote: Calculate, mptrj_frames: list[Atoms]) -> None:
    frames = [atoms for atoms in mptrj_frames if len(atoms) <= 16][:100]
    results = remote(frames)
    assert all(isinstance(r, StructureOutput) for r in results)
    n_atoms = np.array([len(a) for a in frames])
    energy = np.array([r.energy for r in results])
    dft_energy = np.array([a.get_potential_energy() for a in frames]) + mp2020_corrections(frames)
    energy_mae = np.nanmean(np.abs(energy - dft_energy) / n_atoms)
    force_errors = np.concatenate(
        [np.abs(r.forces - a.get_forces()) for a, r in zip(frames, results, strict=True)]
    )
    stress = np.array([r.stress for r in results])
    dft_stress = np.array([a.get_stress(voigt=True) for a in frames])
    stress_mae = np.abs(stress - dft_stress).mean() * GPA_PER_EV_PER_A3
    flipped_mae = np.abs(stress + dft_stress).mean() * GPA_PER_EV_PER_A3
    print(
        f"energy MAE {energy_mae * 1e3:.1f} meV/atom, force MAE {force_errors.mean():.3f} eV/Å, "
        f"stress MAE {stress_mae:.3f} GPa (flipped sign: {flipped_mae:.3f} GPa)"
    )
    assert energy_mae < 0.05
    assert force_errors.mean() < 0.1
    assert stress_mae < 1.0
    assert flipped_mae > 3 * stress_mae  # the file and the service share ASE's sign
