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
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.stress import full_3x3_to_voigt_6_stress

from umlip_serve.potential import file_sha256

#: Frame info key naming where a frame's labels come from.
LABEL_SOURCE_KEY = "label_source"
#: The provenance record written next to a fine-tuned checkpoint.
PROVENANCE_FILE = "provenance.json"
#: Kind tag of a provenance record (so a stray provenance.json is not mistaken for one).
PROVENANCE_KIND = "umlip-finetune"
#: 1 eV/Å^3 in GPa (SCIENCE.md); the MAEs of the record are in GPa.
GPA_PER_EV_PER_A3 = 160.21766208
_LABEL_SOURCE = re.compile(r"^(dft|dft-tensor|model:[A-Za-z0-9_.:+-]+|[a-z][a-z0-9_-]*)$")


class FineTuneError(Exception):
    """A fine-tuning input or setting is wrong; the message says what to change."""


@dataclass(frozen=True)
class Label:
    """One labelled frame's targets in the canonical convention.

    Attributes:
        energy: total energy, eV.
        forces: (n_atoms, 3), eV/Å.
        stress: (3, 3), eV/Å^3, tensile positive (ASE's sign).
    """

    energy: float
    forces: np.ndarray
    stress: np.ndarray


def frame_label(atoms: Atoms) -> Label:
    """The canonical labels of a frame read from a training file.

    Raises:
        FineTuneError: the frame lacks energy, forces or stress.
    """
    calc = atoms.calc
    results = getattr(calc, "results", {}) if calc is not None else {}
    missing = [k for k in ("energy", "forces", "stress") if k not in results]
    if missing:
        raise FineTuneError(f"a training frame ({atoms.get_chemical_formula()}) lacks {missing}")
    stress = np.asarray(results["stress"], dtype=float)
    if stress.shape == (6,):
        xx, yy, zz, yz, xz, xy = stress
        stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return Label(
        energy=float(results["energy"]),
        forces=np.asarray(results["forces"], dtype=float).reshape(len(atoms), 3),
        stress=stress.reshape(3, 3),
    )


def labelled_frame(
    atoms: Atoms, label: Label, label_source: str, info: Mapping[str, Any] | None = None
) -> Atoms:
    """A copy of ``atoms`` carrying ``label`` and ``label_source`` (and extra ``info``)."""
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update(info or {})
    frame.info[LABEL_SOURCE_KEY] = label_source
    frame.calc = SinglePointCalculator(
        frame,
        energy=label.energy,
        forces=np.asarray(label.forces, dtype=float),
        stress=full_3x3_to_voigt_6_stress(np.asarray(label.stress, dtype=float)),
    )
    return frame


def write_training_file(path: Path, frames: Sequence[Atoms]) -> Path:
    """Writes labelled frames as extended XYZ, atomically (a ``.tmp`` file renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp, list(frames), format="extxyz")
    os.replace(tmp, path)
    return path


def check_label_source(value: str) -> str:
    """Returns ``value`` if it is a valid label source; raises :class:`FineTuneError`."""
    if not _LABEL_SOURCE.match(value):
        raise FineTuneError(
            f"label_source {value!r} is not one of dft, dft-tensor, model:<name>, or a "
            "lower-case word"
        )
    return value


@dataclass(frozen=True)
class TrainingData:
    """Labelled frames read from one canonical file.

    Attributes:
        path: the file.
        sha256: its sha256 (recorded in the provenance).
        frames: the frames, each with a SinglePointCalculator holding its labels.
        label_source: where every frame's labels come from (one value per file).
    """

    path: Path
    sha256: str
    frames: list[Atoms]
    label_source: str

    @property
    def material_ids(self) -> list[str]:
        """Distinct ``material_id`` values of the frames, in first-seen order."""
        ids = (str(f.info["material_id"]) for f in self.frames if "material_id" in f.info)
        return list(dict.fromkeys(ids))


def read_training_file(path: Path, label_source: str | None = None) -> TrainingData:
    """Reads a canonical training file and checks every frame's labels.

    Args:
        path: extended XYZ file.
        label_source: used for frames without a ``label_source``; a frame whose own
            value differs is an error.

    Raises:
        FineTuneError: missing or unreadable file, no frames, a frame without energy,
            forces or stress, no label source, or several label sources in one file.
    """
    path = Path(path)
    if not path.is_file():
        raise FineTuneError(f"training file {path} does not exist")
    try:
        frames = read(path, index=":", format="extxyz")
    except Exception as error:  # ase raises many types on a malformed file
        raise FineTuneError(f"cannot read {path} as extended XYZ: {error}") from error
    if not frames:
        raise FineTuneError(f"{path} holds no frames")
    sources = set()
    for frame in frames:
        frame_label(frame)
        source = frame.info.get(LABEL_SOURCE_KEY, label_source)
        if source is None:
            raise FineTuneError(
                f"{path}: frames carry no label_source; write the file with `umlip finetune "
                "label` or say where the labels come from (--label-source dft|dft-tensor|"
                "model:<name>)"
            )
        if label_source is not None and source != label_source:
            raise FineTuneError(f"{path}: frames say label_source={source}, not {label_source}")
        frame.info[LABEL_SOURCE_KEY] = check_label_source(str(source))
        sources.add(str(source))
    if len(sources) != 1:
        raise FineTuneError(f"{path} mixes label sources {sorted(sources)}; use one per file")
    return TrainingData(path, file_sha256(path), frames, sources.pop())


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


@dataclass(frozen=True, kw_only=True)
class EpochMetrics:
    """One epoch as the model's trainer reported it (None where it reports nothing).

    MAEs: energy in eV/atom, forces in eV/Å, stress in GPa; ``train_loss`` in the
    trainer's own loss units (comparable between epochs of one run only).
    """

    epoch: int
    train_loss: float | None = None
    train_energy_mae: float | None = None
    train_force_mae: float | None = None
    train_stress_mae: float | None = None
    valid_loss: float | None = None
    valid_energy_mae: float | None = None
    valid_force_mae: float | None = None
    valid_stress_mae: float | None = None
    seconds: float | None = None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@dataclass(kw_only=True)
class ProvenanceRecorder:
    """Collects a run's provenance; prints each epoch; writes ``provenance.json``.

    Attributes:
        model: model family ("chgnet", "mace", ...); the fine-tuned model is served as
            ``<model>-ft-<first 8 hex of the checkpoint's sha256>``.
        settings: the run's settings.
        train, valid: the data sets.
        base_checkpoint_name: what the run started from (name or file name).
        base_checkpoint_sha256: sha256 of its file.
        package_versions: versions of the packages that trained.
        trainer: how training ran (e.g. "chgnet.trainer.Trainer, targets=efs").
        extra: model-specific settings worth recording (e.g. E0s, element set).
    """

    model: str
    settings: FineTuneSettings
    train: TrainingData
    valid: TrainingData
    base_checkpoint_name: str
    base_checkpoint_sha256: str
    package_versions: dict[str, str]
    trainer: str
    extra: dict[str, Any] = field(default_factory=dict)
    epochs: list[EpochMetrics] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        print(
            f"umlip finetune {self.model}: {len(self.train.frames)} training and "
            f"{len(self.valid.frames)} validation frames (labels: {self.train.label_source}), "
            f"{self.settings.epochs} epochs, from {self.base_checkpoint_name}",
            flush=True,
        )

    def epoch(self, metrics: EpochMetrics) -> None:
        """Records one epoch and prints it on one line."""
        self.epochs.append(metrics)
        print(
            f"epoch {metrics.epoch:>3}/{self.settings.epochs}  loss {_fmt(metrics.train_loss)}  "
            f"train MAE E {_fmt(metrics.train_energy_mae)} eV/atom  F "
            f"{_fmt(metrics.train_force_mae)} eV/Å  S {_fmt(metrics.train_stress_mae, 3)} GPa  "
            f"| valid E {_fmt(metrics.valid_energy_mae)}  F {_fmt(metrics.valid_force_mae)}  "
            f"S {_fmt(metrics.valid_stress_mae, 3)}  ({_fmt(metrics.seconds, 1)} s)",
            flush=True,
        )

    def finish(self, checkpoint: Path) -> dict[str, Any]:
        """Writes ``provenance.json`` beside ``checkpoint`` (which must lie in ``out``).

        Returns:
            The record written.
        """
        checkpoint = Path(checkpoint)
        sha = file_sha256(checkpoint)
        record = {
            "kind": PROVENANCE_KIND,
            "model": self.model,
            "model_name": f"{self.model}-ft-{sha[:8]}",
            "checkpoint_file": checkpoint.name,
            "checkpoint_sha256": sha,
            "base_checkpoint": self.base_checkpoint_name,
            "base_checkpoint_sha256": self.base_checkpoint_sha256,
            "label_source": self.train.label_source,
            "training_data": {"path": str(self.train.path), "sha256": self.train.sha256},
            "validation_data": {"path": str(self.valid.path), "sha256": self.valid.sha256},
            "n_train_frames": len(self.train.frames),
            "n_valid_frames": len(self.valid.frames),
            "trained_materials": self.train.material_ids,
            "hyperparameters": self.settings.hyperparameters(),
            "trainer": self.trainer,
            "extra": self.extra,
            "epochs": [asdict(e) for e in self.epochs],
            "wall_time_s": time.monotonic() - self.started,
            "package_versions": self.package_versions,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        path = checkpoint.parent / PROVENANCE_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        print(
            f"umlip finetune {self.model}: checkpoint {checkpoint} served as "
            f"{record['model_name']} (UMLIP_CHECKPOINT={checkpoint.parent})",
            flush=True,
        )
        return record


@dataclass(frozen=True)
class FineTunedCheckpoint:
    """A checkpoint written by a umlip fine-tuning run, and its record."""

    path: Path
    record: dict[str, Any]

    @property
    def model_name(self) -> str:
        """The name the service reports, e.g. ``chgnet-ft-1a2b3c4d``."""
        return str(self.record["model_name"])

    def provenance_map(self) -> dict[str, str]:
        """The flat string map a service reports in GetModelInfo's ``provenance``."""
        return {
            "kind": PROVENANCE_KIND,
            "base_checkpoint": str(self.record["base_checkpoint"]),
            "base_checkpoint_sha256": str(self.record["base_checkpoint_sha256"]),
            "label_source": str(self.record["label_source"]),
            "training_data_sha256": str(self.record["training_data"]["sha256"]),
            "trained_materials": ",".join(self.record.get("trained_materials", [])),
            "epochs": str(len(self.record.get("epochs", []))),
        }


def resolve_finetuned(checkpoint: str) -> FineTunedCheckpoint | None:
    """The fine-tuned checkpoint that ``checkpoint`` (a file or its folder) names, if any.

    A folder must hold ``provenance.json``; a file is fine-tuned when a
    ``provenance.json`` beside it names it. The file's sha256 must match the record.

    Raises:
        FineTuneError: the record is unreadable, names a missing file, or its sha256
            does not match the file (the checkpoint was replaced after training).
    """
    if not checkpoint:
        return None
    given = Path(checkpoint)
    folder = given if given.is_dir() else given.parent
    record_path = folder / PROVENANCE_FILE
    if not record_path.is_file():
        if given.is_dir():
            raise FineTuneError(f"{given} is a folder without {PROVENANCE_FILE}")
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FineTuneError(f"cannot read {record_path}: {error}") from error
    if not isinstance(record, dict) or record.get("kind") != PROVENANCE_KIND:
        return None if not given.is_dir() else _not_a_record(record_path)
    path = folder / str(record["checkpoint_file"])
    if not given.is_dir() and given.name != path.name:
        return None
    if not path.is_file():
        raise FineTuneError(f"{record_path} names {path.name}, which is missing")
    if file_sha256(path) != record["checkpoint_sha256"]:
        raise FineTuneError(f"{path} does not match the sha256 in {record_path}")
    return FineTunedCheckpoint(path, record)


def _not_a_record(path: Path) -> None:
    raise FineTuneError(f"{path} is not a umlip fine-tuning record")


def run_main(main: Any, argv: Sequence[str] | None = None) -> int:
    """Runs a model's fine-tuning ``main(argv)``; a :class:`FineTuneError` becomes a
    one-line message and exit status 2 (never a traceback)."""
    try:
        main(argv)
    except FineTuneError as error:
        print(f"umlip finetune: {error}", file=sys.stderr)
        return 2
    return 0
