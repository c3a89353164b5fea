"""What every model's fine-tuning entry point shares (no torch): the canonical training
file, the command line, the train/validation split, progress and the provenance record.

A model package's ``umlip_<model>.finetune`` module is a small driver around that
model's own training code (SCIENCE.md section 5). It calls :func:`parse_finetune_args`,
:func:`load_training_data`, converts the canonical labels to its trainer's units and
signs, trains, reports each epoch to a :class:`ProvenanceRecorder` and finishes with
:meth:`ProvenanceRecorder.finish`, which writes ``OUT/provenance.json`` next to the
checkpoint. A service started with ``UMLIP_CHECKPOINT`` naming that checkpoint (or its
folder) reports the fine-tuned model under its own name (:func:`resolve_finetuned`).

The canonical training file is extended XYZ in ASE's convention: total energy (eV),
forces (eV/Å), stress (eV/Å^3, tensile positive), and in every frame's info a
``label_source`` (``dft``, ``dft-tensor``, ``model:<name>``, ...) plus, when the frame
came from ``umlip finetune select``, its ``material_id`` and ``config_id``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from umlip_serve.provenance import (
    PROVENANCE_FILE,
    PROVENANCE_KIND,
    EpochMetrics,
    FineTunedCheckpoint,
    ProvenanceRecorder,
    resolve_finetuned,
)
from umlip_wire.batch import GPA_PER_EV_PER_A3  # the MAEs of the record are in GPa
from umlip_wire.training_data import (
    LABEL_SOURCE_KEY,
    FineTuneError,
    Label,
    TrainingData,
    check_label_source,
    frame_label,
    labelled_frame,
    read_training_file,
    write_training_file,
)

__all__ = [
    "GPA_PER_EV_PER_A3",
    "LABEL_SOURCE_KEY",
    "PROVENANCE_FILE",
    "PROVENANCE_KIND",
    "EpochMetrics",
    "FineTuneError",
    "FineTuneSettings",
    "FineTunedCheckpoint",
    "Label",
    "ProvenanceRecorder",
    "TrainingData",
    "build_finetune_parser",
    "check_label_source",
    "frame_label",
    "labelled_frame",
    "load_training_data",
    "parse_finetune_args",
    "read_training_file",
    "resolve_finetuned",
    "run_main",
    "write_training_file",
]


@dataclass(frozen=True, kw_only=True)
class FineTuneSettings:
    """Every hyper-parameter of a fine-tuning run (all recorded in the provenance).

    Attributes:
        train: canonical training file.
        valid: canonical validation file; None = ``valid_fraction`` of ``train``.
        out: output folder (checkpoint + provenance.json).
        base_checkpoint: the checkpoint to start from; "" = the model's default
            (its shipped weights, where the wheel has them).
        epochs: passes over the training frames.
        learning_rate: the optimiser's learning rate.
        energy_weight, force_weight, stress_weight: loss weights.
        batch_size: frames per optimiser step.
        freeze: model-specific parameter-name prefixes whose weights stay fixed.
        seed: random seed (split, shuffling, initialisation of new heads).
        device: torch device.
        valid_fraction: share of ``train`` held out when ``valid`` is None.
        label_source: for frames that carry none (must match those that do).
        torch_threads: intra-op threads.
    """

    train: Path
    valid: Path | None = None
    out: Path
    base_checkpoint: str = ""
    epochs: int = 5
    learning_rate: float = 1e-4
    energy_weight: float = 1.0
    force_weight: float = 1.0
    stress_weight: float = 0.1
    batch_size: int = 4
    freeze: tuple[str, ...] = ()
    seed: int = 0
    device: str = "cpu"
    valid_fraction: float = 0.1
    label_source: str | None = None
    torch_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "torch_threads"):
            if getattr(self, name) < 1:
                raise FineTuneError(f"{name} must be >= 1")
        if not self.learning_rate > 0:
            raise FineTuneError("learning_rate must be > 0")
        for name in ("energy_weight", "force_weight", "stress_weight"):
            if not getattr(self, name) >= 0:
                raise FineTuneError(f"{name} must be >= 0")
        if not 0 < self.valid_fraction < 1:
            raise FineTuneError("valid_fraction must be in (0, 1)")

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-friendly form of every setting."""
        values = asdict(self)
        for key in ("train", "valid", "out"):
            values[key] = None if values[key] is None else str(values[key])
        values["freeze"] = list(self.freeze)
        return values


def build_finetune_parser(
    model: str, defaults: Mapping[str, Any] | None = None
) -> argparse.ArgumentParser:
    """The command line every ``python -m umlip_<model>.finetune`` accepts.

    Args:
        model: model family, for the help text.
        defaults: model-specific defaults (e.g. a learning rate) overriding the common ones.
    """
    base = FineTuneSettings(train=Path("-"), out=Path("-"))
    d = {**asdict(base), **(defaults or {})}
    parser = argparse.ArgumentParser(
        prog=f"python -m umlip_{model}.finetune",
        description=f"Fine-tune {model} with its own training code on a canonical extended "
        "XYZ file (energy eV, forces eV/Å, stress eV/Å^3 tensile positive).",
    )
    parser.add_argument("--train", type=Path, required=True, help="canonical training file")
    parser.add_argument("--valid", type=Path, help="validation file (default: part of --train)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--base-checkpoint", default=d["base_checkpoint"], help="checkpoint to start from"
    )
    parser.add_argument("--epochs", type=int, default=d["epochs"])
    parser.add_argument("--learning-rate", "--lr", type=float, default=d["learning_rate"])
    parser.add_argument("--energy-weight", type=float, default=d["energy_weight"])
    parser.add_argument("--force-weight", type=float, default=d["force_weight"])
    parser.add_argument("--stress-weight", type=float, default=d["stress_weight"])
    parser.add_argument("--batch-size", type=int, default=d["batch_size"])
    parser.add_argument(
        "--freeze",
        action="append",
        default=list(d["freeze"]),
        metavar="PREFIX",
        help="keep parameters whose name starts with PREFIX fixed (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--device", default=d["device"])
    parser.add_argument("--valid-fraction", type=float, default=d["valid_fraction"])
    parser.add_argument("--label-source", default=d["label_source"])
    parser.add_argument("--torch-threads", type=int, default=d["torch_threads"])
    return parser


def parse_finetune_args(
    model: str, argv: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None
) -> FineTuneSettings:
    """Parses the common command line into settings.

    Raises:
        FineTuneError: a value is out of range.
    """
    args = build_finetune_parser(model, defaults).parse_args(argv)
    return FineTuneSettings(
        train=args.train,
        valid=args.valid,
        out=args.out,
        base_checkpoint=args.base_checkpoint,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        energy_weight=args.energy_weight,
        force_weight=args.force_weight,
        stress_weight=args.stress_weight,
        batch_size=args.batch_size,
        freeze=tuple(args.freeze),
        seed=args.seed,
        device=args.device,
        valid_fraction=args.valid_fraction,
        label_source=args.label_source,
        torch_threads=args.torch_threads,
    )


def load_training_data(settings: FineTuneSettings) -> tuple[TrainingData, TrainingData]:
    """The training and validation sets of a run.

    Without ``settings.valid``, ``valid_fraction`` of the training frames (at least one,
    chosen with ``settings.seed``) form the validation set; both keep the file's sha256
    and label source.

    Raises:
        FineTuneError: unreadable files, too few frames to split, or label sources of the
            two files that differ.
    """
    train = read_training_file(settings.train, settings.label_source)
    if settings.valid is not None:
        valid = read_training_file(settings.valid, settings.label_source)
        if valid.label_source != train.label_source:
            raise FineTuneError(
                f"training labels are {train.label_source}, validation labels "
                f"{valid.label_source}: use one label source"
            )
        return train, valid
    if len(train.frames) < 2:
        raise FineTuneError(f"{settings.train} has one frame: give --valid or more frames")
    order = np.random.default_rng(settings.seed).permutation(len(train.frames))
    n_valid = max(1, round(settings.valid_fraction * len(train.frames)))
    held = set(order[:n_valid].tolist())
    return (
        replace(train, frames=[f for i, f in enumerate(train.frames) if i not in held]),
        replace(train, frames=[f for i, f in enumerate(train.frames) if i in held]),
    )


def run_main(main: Any, argv: Sequence[str] | None = None) -> int:
    """Runs a model's fine-tuning ``main(argv)``; a :class:`FineTuneError` becomes a
    one-line message and exit status 2 (never a traceback)."""
    try:
        main(argv)
    except FineTuneError as error:
        print(f"umlip finetune: {error}", file=sys.stderr)
        return 2
    return 0
