"""Builds a tiny, briefly trained MatterSim checkpoint with mattersim's own code (offline).

An ``M3Gnet`` with two blocks of 16 units, its energy normalisation fitted by
mattersim's ``AtomScaling`` (per-species linear-regression shift as in
``finetune_mattersim.py``, one force-RMS scale), trained for a few epochs with
``Potential.train_model`` on small MPtrj frames and written with ``Potential.save``
(the format ``Potential.from_checkpoint`` and ``MatterSimCalculator`` read).

Run as a script to write one: ``python tiny_mattersim.py OUT.pth``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from ase import Atoms, units
from ase.io import read
from mattersim.datasets.utils.build import build_dataloader
from mattersim.forcefield.m3gnet.m3gnet import M3Gnet
from mattersim.forcefield.m3gnet.scaling import AtomScaling
from mattersim.forcefield.potential import Potential

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mptrj-random-1k.xyz"
CUTOFF, THREEBODY_CUTOFF = 5.0, 4.0


def small_frames(count: int = 48, max_atoms: int = 12) -> list[Atoms]:
    """The first ``count`` MPtrj frames with at most ``max_atoms`` atoms (DFT labels)."""
    frames = [a for a in read(DATA, index=":") if len(a) <= max_atoms]
    return frames[:count]


def build_tiny_mattersim(
    path: Path, frames: list[Atoms] | None = None, epochs: int = 15, seed: int = 0
) -> Path:
    """Trains a tiny M3Gnet on ``frames`` and saves it to ``path`` with ``Potential.save``."""
    frames = frames if frames is not None else small_frames()
    torch.set_num_threads(1)  # two threads on two busy cores run several times slower
    torch.manual_seed(seed)
    energies = [a.get_potential_energy() for a in frames]
    forces = [a.get_forces() for a in frames]
    stresses = [a.get_stress(voigt=False) / units.GPa for a in frames]  # mattersim: GPa
    model = M3Gnet(
        num_blocks=2, units=16, max_l=3, max_n=3, cutoff=CUTOFF,
        threebody_cutoff=THREEBODY_CUTOFF, device="cpu",
    )  # fmt: skip
    model.set_normalizer(
        AtomScaling(
            atoms=frames,
            total_energy=energies,
            forces=forces,
            scale_key="forces_rms",
            shift_key="per_species_energy_mean_linear_reg",
            device="cpu",
        )
    )
    potential = Potential(model, device="cpu", lr=1e-2)
    loader = build_dataloader(
        frames, energies, forces, stresses, cutoff=CUTOFF,
        threebody_cutoff=THREEBODY_CUTOFF, batch_size=8, shuffle=True,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:  # train_model probes save_path
        potential.train_model(
            loader, None, loss=torch.nn.MSELoss(), include_forces=True,
            include_stresses=True, epochs=epochs, save_path=scratch, save_checkpoint=False,
        )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    potential.save(str(path))
    return path


if __name__ == "__main__":
    start = time.perf_counter()
    out = build_tiny_mattersim(Path(sys.argv[1]))
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
