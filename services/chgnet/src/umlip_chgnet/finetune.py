"""Fine-tunes CHGNet with its own trainer: ``python -m umlip_chgnet.finetune --train FILE``.

The canonical training file (energy eV, forces eV/Å, stress eV/Å^3 tensile positive) is
converted by :func:`to_chgnet_sample` into what chgnet's ``StructureData`` takes: energy
per atom (eV/atom, the pretrained models are intensive), forces in eV/Å and stress in
kbar with VASP's sign (compressive positive). ``StructureData.__getitem__`` multiplies
that stress by -0.1, so the trainer's loss compares GPa with ASE's sign, which is what
``CHGNet.forward`` predicts: (1/V) dE/d(strain) * 160.21766208. The model divides by the
*signed* cell volume, so a left-handed cell would get the opposite stress: such cells
are given the same lattice with right-handed vectors (a -> -a, b -> -b, c -> -c) before
training.

Training runs ``chgnet.trainer.Trainer(targets="efs")`` one epoch per ``train`` call, so
each epoch is timed and reported as it ends; the MAEs come from the trainer's
``training_history`` (eV/atom, eV/Å, GPa) and the loss from its own ``CombinedLoss``,
averaged over the epoch's frames like the trainer's log. The final-epoch model (not the
best by validation) is written with ``Trainer.save`` to ``OUT/checkpoint.pth.tar``,
which ``CHGNet.from_file`` and the service adapter read.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from chgnet.data.dataset import StructureData, collate_graphs
from chgnet.graph import CrystalGraphConverter
from chgnet.model import CHGNet
from chgnet.trainer import Trainer
from pymatgen.core import Lattice, Structure
from torch import Tensor, nn
from torch.utils.data import DataLoader

from umlip_chgnet.checkpoint import DEFAULT_CHECKPOINT, resolve_checkpoint
from umlip_serve import CalculatorSetupError, file_sha256, package_versions
from umlip_serve.finetune import (
    GPA_PER_EV_PER_A3,
    EpochMetrics,
    FineTuneError,
    FineTuneSettings,
    Label,
    ProvenanceRecorder,
    TrainingData,
    frame_label,
    load_training_data,
    parse_finetune_args,
    resolve_finetuned,
    run_main,
)

#: 1 eV/Å^3 in kbar (1 GPa = 10 kbar).
KBAR_PER_EV_PER_A3 = 10.0 * GPA_PER_EV_PER_A3
#: The checkpoint file written into OUT.
CHECKPOINT_FILE = "checkpoint.pth.tar"
#: CHGNet-specific defaults of the command line (chgnet's own Trainer defaults for the
#: learning rate and loss weights: 1e-3; energy 1, force 1, stress 0.1).
DEFAULTS: dict[str, Any] = {"learning_rate": 1e-3, "epochs": 5, "batch_size": 4}
#: chgnet Trainer settings fixed here (its defaults), recorded in the provenance.
TRAINER_OPTIONS: dict[str, Any] = {"optimizer": "Adam", "scheduler": "CosLR", "criterion": "MSE"}


@dataclass(frozen=True)
class CHGNetSample:
    """One frame as chgnet's ``StructureData`` takes it.

    Attributes:
        structure: the frame; its lattice vectors form a right-handed set.
        energy_per_atom: eV/atom.
        forces: (n_atoms, 3), eV/Å.
        stress_kbar: (3, 3), kbar, VASP's sign (compressive positive).
        flipped: the frame's cell was left-handed and its vectors were negated.
    """

    structure: Structure
    energy_per_atom: float
    forces: np.ndarray
    stress_kbar: np.ndarray
    flipped: bool


def to_chgnet_sample(atoms: Atoms, label: Label) -> CHGNetSample:
    """Converts one canonical frame to chgnet's ``StructureData`` units and signs.

    Args:
        atoms: a periodic frame.
        label: its canonical labels (eV, eV/Å, eV/Å^3 tensile positive).

    Returns:
        Energy in eV/atom, forces in eV/Å, stress in kbar compressive positive
        (= -10 * GPa, since ``StructureData`` multiplies by -0.1 to get GPa tensile
        positive), on a right-handed cell.

    Raises:
        FineTuneError: the frame is not periodic in all directions or its cell is flat.
    """
    if not np.all(atoms.pbc):
        raise FineTuneError(f"{atoms.get_chemical_formula()}: CHGNet needs a periodic frame")
    cell = np.asarray(atoms.cell.array, dtype=float)
    det = float(np.linalg.det(cell))
    if abs(det) < 1e-6:
        raise FineTuneError(f"{atoms.get_chemical_formula()}: the cell has no volume")
    flipped = det < 0
    structure = Structure(
        Lattice(-cell if flipped else cell),
        atoms.numbers,
        atoms.positions,
        coords_are_cartesian=True,
    )
    return CHGNetSample(
        structure=structure,
        energy_per_atom=label.energy / len(atoms),
        forces=np.asarray(label.forces, dtype=float),
        stress_kbar=-np.asarray(label.stress, dtype=float) * KBAR_PER_EV_PER_A3,
        flipped=flipped,
    )


def structure_data(
    frames: Sequence[Atoms], converter: CrystalGraphConverter, what: str
) -> tuple[StructureData, int]:
    """chgnet's dataset of the frames, every graph built (and cached) up front.

    Returns:
        The dataset and how many left-handed cells were flipped.

    Raises:
        FineTuneError: a frame has no graph (e.g. an isolated atom); ``StructureData``
            would otherwise swap it silently for a random other frame.
    """
    samples = [to_chgnet_sample(atoms, frame_label(atoms)) for atoms in frames]
    data = StructureData(
        structures=[s.structure for s in samples],
        energies=[s.energy_per_atom for s in samples],
        forces=[s.forces for s in samples],
        stresses=[s.stress_kbar for s in samples],
        structure_ids=list(range(len(samples))),
        graph_converter=converter,
        shuffle=False,
    )
    for index in range(len(data)):
        data[index]  # builds the graph; StructureData caches every item
    if data.failed_graph_id:
        bad = sorted(set(data.failed_graph_id.values()))
        raise FineTuneError(f"{what}: CHGNet cannot build graphs of {bad} (isolated atoms?)")
    return data, sum(s.flipped for s in samples)


def load_base_model(checkpoint: str) -> tuple[CHGNet, str, Path]:
    """The model to start from: a shipped version, a checkpoint file or a fine-tune folder.

    Returns:
        The model (on the CPU), its name and its weights file.

    Raises:
        FineTuneError: unknown name, missing file or unreadable checkpoint.
    """
    checkpoint = checkpoint or DEFAULT_CHECKPOINT
    finetuned = resolve_finetuned(checkpoint) if Path(checkpoint).is_dir() else None
    try:
        name, path, pretrained = resolve_checkpoint(
            str(finetuned.path) if finetuned else checkpoint
        )
    except CalculatorSetupError as error:
        raise FineTuneError(str(error)) from error
    try:
        if pretrained:  # chgnet's loader applies the per-version options (mlp_out_bias)
            model = CHGNet.load(model_name=name, use_device="cpu", verbose=False)
        else:
            model = CHGNet.from_file(str(path))
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError) as error:
        raise FineTuneError(f"cannot load CHGNet from {path}: {error}") from error
    if not model.is_intensive:
        raise FineTuneError(f"{path}: only intensive (eV/atom) CHGNet models are supported")
    return model, name, path


def freeze(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Sets ``requires_grad = False`` on parameters whose name starts with a prefix.

    Returns:
        The frozen parameter names.

    Raises:
        FineTuneError: a prefix matches no parameter.
    """
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            tops = sorted({name.split(".")[0] for name in names})
            raise FineTuneError(f"--freeze {prefix!r} matches no CHGNet parameter; try {tops}")
    frozen = []
    for name, parameter in model.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            parameter.requires_grad = False
            frozen.append(name)
    return frozen


class RecordingLoss(nn.Module):
    """chgnet's ``CombinedLoss`` that also sums its loss per frame, train and eval apart.

    The averages equal the "Loss" the trainer logs (an average weighted by frames per
    batch), in its loss units: eV²/atom² + eV²/Å² + GPa², times the loss weights.
    """

    def __init__(self, inner: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.model = model
        self.reset()

    def reset(self) -> None:
        """Forgets the sums (call at the start of an epoch)."""
        self.sums = {True: 0.0, False: 0.0}
        self.frames = {True: 0, False: 0}

    def forward(self, targets: dict[str, Tensor], prediction: dict[str, Tensor]) -> dict:
        """The trainer's loss dict, unchanged."""
        out = self.inner(targets, prediction)
        n = len(targets["e"])
        self.sums[self.model.training] += float(out["loss"].detach()) * n
        self.frames[self.model.training] += n
        return out

    def mean(self, training: bool) -> float | None:
        """Mean loss per frame of the epoch (None before any frame)."""
        n = self.frames[training]
        return self.sums[training] / n if n else None


def _seed(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _elements(*sets: TrainingData) -> list[str]:
    return sorted({s for data in sets for f in data.frames for s in f.get_chemical_symbols()})


def main(argv: Sequence[str] | None = None) -> Path:
    """Fine-tunes CHGNet on a canonical file; returns the checkpoint written.

    Raises:
        FineTuneError: bad input or settings, or training that diverged.
    """
    settings: FineTuneSettings = parse_finetune_args("chgnet", argv, DEFAULTS)
    torch.set_num_threads(settings.torch_threads)
    generator = _seed(settings.seed)
    train, valid = load_training_data(settings)
    model, base_name, base_path = load_base_model(settings.base_checkpoint)
    n_elements = model.atom_embedding.embedding.num_embeddings
    for data in (train, valid):
        too_heavy = {int(z) for f in data.frames for z in f.numbers if not 1 <= z <= n_elements}
        if too_heavy:
            raise FineTuneError(f"{data.path}: CHGNet has no elements {sorted(too_heavy)}")
    frozen = freeze(model, settings.freeze)
    train_data, train_flipped = structure_data(train.frames, model.graph_converter, "train")
    valid_data, valid_flipped = structure_data(valid.frames, model.graph_converter, "valid")
    loaders = {
        "train": DataLoader(
            train_data,
            batch_size=settings.batch_size,
            shuffle=True,
            collate_fn=collate_graphs,
            generator=generator,
        ),
        "valid": DataLoader(
            valid_data, batch_size=settings.batch_size, shuffle=False, collate_fn=collate_graphs
        ),
    }
    trainer = Trainer(
        model=model,
        targets="efs",
        energy_loss_ratio=settings.energy_weight,
        force_loss_ratio=settings.force_weight,
        stress_loss_ratio=settings.stress_weight,
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        torch_seed=settings.seed,
        use_device=settings.device,
        print_freq=10,
        **TRAINER_OPTIONS,
    )
    loss = RecordingLoss(trainer.criterion, model)
    trainer.criterion = loss
    recorder = ProvenanceRecorder(
        model="chgnet",
        settings=settings,
        train=train,
        valid=valid,
        base_checkpoint_name=base_name,
        base_checkpoint_sha256=file_sha256(base_path),
        package_versions=package_versions("chgnet", "torch", "pymatgen", "numpy", "ase"),
        trainer='chgnet.trainer.Trainer(targets="efs"), StructureData + collate_graphs',
        extra={
            "base_model_version": model.version,
            "elements": _elements(train, valid),
            "trainer_args": json.loads(json.dumps(trainer.trainer_args, default=str)),
            "labels": "energy eV/atom, forces eV/Å, stress kbar compressive+ "
            "(StructureData x -0.1 -> GPa tensile+)",
            "left_handed_cells_flipped": {"train": train_flipped, "valid": valid_flipped},
            "frozen_parameters": len(frozen),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "composition_model": "frozen (Trainer.train(train_composition_model=False))",
            "checkpoint": "final epoch, Trainer.save format",
        },
    )
    history = trainer.training_history
    for epoch in range(settings.epochs):
        trainer.starting_epoch, trainer.epochs = epoch, epoch + 1  # one epoch per call
        loss.reset()
        started = time.perf_counter()
        trainer.train(loaders["train"], loaders["valid"], save_dir="")
        if len(history["e"]["val"]) <= epoch or not np.isfinite(history["e"]["val"][epoch]):
            raise FineTuneError(
                f"training diverged (NaN) in epoch {epoch + 1}: lower --learning-rate"
            )
        recorder.epoch(
            EpochMetrics(
                epoch=epoch + 1,
                train_loss=loss.mean(True),
                train_energy_mae=history["e"]["train"][epoch],
                train_force_mae=history["f"]["train"][epoch],
                train_stress_mae=history["s"]["train"][epoch],
                valid_loss=loss.mean(False),
                valid_energy_mae=history["e"]["val"][epoch],
                valid_force_mae=history["f"]["val"][epoch],
                valid_stress_mae=history["s"]["val"][epoch],
                seconds=time.perf_counter() - started,
            )
        )
    trainer.criterion = loss.inner  # save the trainer as chgnet made it
    settings.out.mkdir(parents=True, exist_ok=True)
    checkpoint = settings.out / CHECKPOINT_FILE
    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    trainer.model.to("cpu")
    trainer.save(str(tmp))
    os.replace(tmp, checkpoint)
    recorder.finish(checkpoint)
    return checkpoint


if __name__ == "__main__":
    sys.exit(run_main(main))
