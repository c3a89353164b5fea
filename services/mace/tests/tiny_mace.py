"""Builds a tiny, briefly trained MACE model file with mace-torch's own code (offline).

The model is a ``ScaleShiftMACE`` with tiny irreps, its E0s fitted by mace-torch's
least-squares ``compute_average_E0s`` and trained for a few Adam steps with mace-torch's
``WeightedEnergyForcesStressLoss`` on small MPtrj frames, then saved with ``torch.save``
as ``mace_run_train`` writes its ``.model`` files. Numbers look physical (per-atom
energies of the right size, nonzero forces and stresses); accuracy is not the point.

Run as a script to write one: ``python tiny_mace.py OUT.model``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mace  # noqa: F401  (first: it lets e3nn 0.4.4 torch.load its constants)
import numpy as np
import torch
from ase import Atoms
from ase.io import read
from e3nn import o3
from mace import data as mace_data
from mace import modules
from mace.tools import torch_geometric, torch_tools, utils

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mptrj-random-1k.xyz"
R_MAX = 4.5


def small_frames(count: int = 48, max_atoms: int = 12) -> list[Atoms]:
    """The first ``count`` MPtrj frames with at most ``max_atoms`` atoms (DFT labels)."""
    frames = [a for a in read(DATA, index=":") if len(a) <= max_atoms]
    return frames[:count]


def _configs(frames: list[Atoms]) -> list[mace_data.Configuration]:
    """mace-torch configurations carrying the frames' DFT energy, forces and stress."""
    keyspec = mace_data.KeySpecification(
        info_keys={"energy": "REF_energy", "stress": "REF_stress"},
        arrays_keys={"forces": "REF_forces"},
    )
    configs = []
    for atoms in frames:
        labelled = atoms.copy()
        labelled.info["REF_energy"] = atoms.get_potential_energy()
        labelled.info["REF_stress"] = atoms.get_stress(voigt=True)
        labelled.arrays["REF_forces"] = atoms.get_forces()
        configs.append(mace_data.config_from_atoms(labelled, key_specification=keyspec))
    return configs


def build_tiny_mace(
    path: Path, frames: list[Atoms] | None = None, steps: int = 80, seed: int = 0
) -> Path:
    """Trains a tiny float64 ScaleShiftMACE on ``frames`` and saves it to ``path``."""
    frames = frames if frames is not None else small_frames()
    torch.set_num_threads(1)  # two threads on two busy cores run several times slower
    torch.manual_seed(seed)
    with torch_tools.default_dtype("float64"):
        z_table = utils.AtomicNumberTable(sorted({int(z) for a in frames for z in a.numbers}))
        configs = _configs(frames)
        e0s = mace_data.compute_average_E0s(configs, z_table)
        graphs = [
            mace_data.AtomicData.from_config(c, z_table=z_table, cutoff=R_MAX) for c in configs
        ]
        loader = torch_geometric.dataloader.DataLoader(graphs, batch_size=8, shuffle=True)
        avg_neighbors = modules.compute_avg_num_neighbors(loader)
        atomic_energies = np.array([e0s[z] for z in z_table.zs])
        # mace_run_train's default "rms_forces_scaling" of the interaction energy
        mean, rms = modules.compute_mean_rms_energy_forces(loader, atomic_energies)
        model = modules.ScaleShiftMACE(
            r_max=R_MAX,
            num_bessel=6,
            num_polynomial_cutoff=5,
            max_ell=2,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
            num_interactions=2,
            num_elements=len(z_table),
            hidden_irreps=o3.Irreps("8x0e + 8x1o"),
            MLP_irreps=o3.Irreps("8x0e"),
            atomic_energies=atomic_energies,
            avg_num_neighbors=avg_neighbors,
            atomic_numbers=z_table.zs,
            correlation=2,
            gate=torch.nn.functional.silu,
            radial_MLP=[16, 16],
            atomic_inter_scale=rms,
            atomic_inter_shift=mean,
        )
        loss_fn = modules.WeightedEnergyForcesStressLoss(
            energy_weight=1.0, forces_weight=10.0, stress_weight=100.0
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-2)
        done = 0
        while done < steps:
            for batch in loader:
                optimizer.zero_grad()
                pred = model(batch.to_dict(), training=True, compute_stress=True)
                loss_fn(ref=batch, pred=pred).backward()
                optimizer.step()
                done += 1
                if done == steps:
                    break
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model, path)
    return path


if __name__ == "__main__":
    start = time.perf_counter()
    out = build_tiny_mace(Path(sys.argv[1]))
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
