"""The provenance record of a fine-tuned checkpoint, and finding it again (no torch).

:class:`ProvenanceRecorder` prints each epoch and writes ``provenance.json`` beside the
checkpoint; :func:`resolve_finetuned` finds that record from ``UMLIP_CHECKPOINT`` (the
checkpoint file or its folder) and checks the file against it, so a service reports
the fine-tuned model under its own name (``<model>-ft-<sha8>``) with its provenance.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from umlip_wire.digest import file_sha256
from umlip_wire.provenance import PROVENANCE_KIND
from umlip_wire.training_data import FineTuneError, TrainingData

if TYPE_CHECKING:
    from umlip_serve.finetune import FineTuneSettings

#: The provenance record written next to a fine-tuned checkpoint.
PROVENANCE_FILE = "provenance.json"


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
