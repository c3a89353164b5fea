"""``umlip finetune label``: attach reference labels to the selected configurations.

SCIENCE.md §5 step 3. Label files are read with ASE (extended XYZ, vasprun.xml, OUTCAR
and any other format it reads; every frame of each file), so energies, forces and
stresses arrive in ASE's convention (eV, eV/Å, eV/Å^3 tensile positive). Each frame is
matched to a configuration of the selection by structure
(:mod:`umlip_orchestrator.finetune.matching`), its labels are brought into that
configuration's frame and atom order, and the matched frames are written as one
canonical training file carrying the ``label_source``. Frames that match nothing, lack
a label, or label a configuration already labelled are reported with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read

from umlip_orchestrator.finetune.matching import Tolerance, composition_key, match_frame
from umlip_orchestrator.finetune.selection import CONFIGURATIONS_FILE, read_selection
from umlip_wire.training_data import (
    FineTuneError,
    Label,
    check_label_source,
    frame_label,
    labelled_frame,
    write_training_file,
)

TRAINING_FILE = "training.xyz"
LABEL_REPORT_FILE = "label-report.json"


class LabelError(ValueError):
    """The labels cannot be attached as asked; the message says what to supply."""


@dataclass(frozen=True)
class Unmatched:
    """A label frame that was not used, and why."""

    source: str
    frame: int
    formula: str
    reason: str


@dataclass(frozen=True)
class LabelOutcome:
    """What ``label`` wrote."""

    training_file: Path
    n_matched: int
    n_configurations: int
    unmatched: list[Unmatched]
    label_source: str


def read_label_frames(paths: Sequence[Path]) -> list[tuple[str, int, Atoms]]:
    """Every frame of every label file, as (file, frame index, atoms).

    Raises:
        LabelError: a file is missing or ASE cannot read it.
    """
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise LabelError(f"label file {path} does not exist")
        try:
            read_frames = read(path, index=":")
        except Exception as error:  # ASE's readers raise many types on foreign files
            raise LabelError(f"ASE cannot read {path}: {type(error).__name__}: {error}") from error
        frames += [(str(path), i, atoms) for i, atoms in enumerate(read_frames)]
    return frames


def _rotated_label(label: Label, rotation: np.ndarray, permutation: np.ndarray) -> Label:
    """The label in the configuration's Cartesian frame and atom order."""
    forces = np.empty_like(label.forces)
    forces[permutation] = label.forces @ rotation.T
    return Label(label.energy, forces, rotation @ label.stress @ rotation.T)


def label_selection(
    directory: Path,
    label_paths: Sequence[Path],
    label_source: str = "dft",
    tolerance: Tolerance | None = None,
    out: Path | None = None,
) -> LabelOutcome:
    """Matches label frames to the selection in ``directory``; writes the training file.

    Args:
        directory: output folder of ``umlip finetune select``.
        label_paths: files with labelled frames.
        label_source: where the labels come from (``dft``, ``dft-tensor``,
            ``model:<name>``); recorded in every frame.
        tolerance: matching tolerances.
        out: training file to write (default ``directory/training.xyz``).

    Raises:
        LabelError: no label files, unreadable files, a bad label source, or no frame
            matched any configuration.
    """
    tolerance = tolerance or Tolerance()
    directory = Path(directory)
    record = read_selection(directory)
    if not label_paths:
        raise LabelError(
            f"no labels given: compute energies, forces and stresses of the "
            f"{len(record['configurations'])} configurations in {directory / 'poscar'} "
            f"(or {directory / CONFIGURATIONS_FILE}) with a reference method, then run "
            f"`umlip finetune label {directory} --labels FILE...` (extxyz, vasprun.xml, "
            "OUTCAR or any format ASE reads)"
        )
    try:
        label_source = check_label_source(label_source)
    except FineTuneError as error:
        raise LabelError(str(error)) from error
    configs = read(directory / CONFIGURATIONS_FILE, index=":")
    by_composition: dict[tuple[int, ...], list[int]] = {}
    for index, config in enumerate(configs):
        by_composition.setdefault(composition_key(config), []).append(index)
    labelled: dict[int, Atoms] = {}
    unmatched: list[Unmatched] = []
    for source, number, frame in read_label_frames(label_paths):
        formula = frame.get_chemical_formula()

        def miss(
            reason: str, source: str = source, number: int = number, formula: str = formula
        ) -> None:
            unmatched.append(Unmatched(source, number, formula, reason))

        try:
            label = frame_label(frame)
        except FineTuneError as error:
            miss(str(error))
            continue
        candidates = by_composition.get(composition_key(frame), [])
        if not candidates:
            miss(f"no configuration has the composition {formula}")
            continue
        match, why = match_frame(frame, configs, candidates, tolerance, labelled.keys())
        if match is None:
            miss(why)
            continue
        config = configs[match.index]
        if match.index in labelled:
            miss(f"duplicate: {config.info['config_id']} is already labelled")
            continue
        rotated = _rotated_label(label, match.rotation, match.permutation)
        info = {k: config.info[k] for k in ("config_id", "material_id", "kind")}
        labelled[match.index] = labelled_frame(config, rotated, label_source, info)
    if not labelled:
        reasons = "; ".join(sorted({u.reason for u in unmatched})[:3])
        raise LabelError(f"no label frame matched a configuration of {directory}: {reasons}")
    training = write_training_file(
        out or directory / TRAINING_FILE, [labelled[i] for i in sorted(labelled)]
    )
    report = {
        "label_source": label_source,
        "label_files": [str(p) for p in label_paths],
        "tolerance": asdict(tolerance),
        "training_file": str(training),
        "n_configurations": len(configs),
        "n_matched": len(labelled),
        "unlabelled_configurations": [
            c.info["config_id"] for i, c in enumerate(configs) if i not in labelled
        ],
        "unmatched_frames": [asdict(u) for u in unmatched],
    }
    (directory / LABEL_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return LabelOutcome(training, len(labelled), len(configs), unmatched, label_source)
