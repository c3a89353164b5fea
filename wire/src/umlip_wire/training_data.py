"""The canonical training file of fine-tuning (no torch).

Extended XYZ in ASE's convention: total energy (eV), forces (eV/Å), stress (eV/Å^3,
tensile positive), and in every frame's info a ``label_source`` (``dft``,
``dft-tensor``, ``model:<name>``, ...) plus, when the frame came from ``umlip finetune
select``, its ``material_id`` and ``config_id``. Each model's fine-tuning converts these
labels to its trainer's units and signs; the orchestrator writes them
(``umlip finetune label``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.stress import full_3x3_to_voigt_6_stress

from umlip_wire.digest import file_sha256

#: Frame info key naming where a frame's labels come from.
LABEL_SOURCE_KEY = "label_source"
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
