"""Reading the structures a benchmark computes, with their DFT reference values.

Three kinds of input are accepted by :func:`load_dataset`:

- a JSON list of entries (plain or gzip, ``*.json`` / ``*.json.gz``), each with a
  pymatgen ``Structure.as_dict()`` under ``structure`` (or being one), an id under
  ``mp_id``/``material_id``/``id`` (else its index) and optional reference moduli in GPa
  (``K_VRH``/``bulk_modulus_vrh``, ``G_VRH``/``shear_modulus_vrh``, and a 6x6 Voigt
  tensor ``elastic_tensor_original``/``elastic_tensor``);
- one structure file that ASE reads (CIF, POSCAR, extxyz, possibly many frames);
- a directory of such files (sorted by name, not recursive; hidden files skipped).

Anything that is not a computable crystal (bad JSON, a non-structure file, an entry
without a structure, a disordered or non-periodic structure, a duplicate id) becomes a
:class:`DatasetProblem` naming its source and the reason; the rest is still read.
A missing path or a single file of unrecognised format raises :class:`DatasetError`.

Duplicate material ids are problems, never renamed: the id is the key that resumes a
run, so it must not depend on the order of the input. The first occurrence is kept.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.io import read as ase_read
from ase.io.formats import UnknownFileTypeError, filetype
from numpy.typing import NDArray
from pymatgen.core import Composition, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from umlip_wire.digest import file_sha256

_ID_KEYS = ("mp_id", "material_id", "id")
_K_KEYS = ("K_VRH", "k_vrh", "bulk_modulus_vrh", "bulk_modulus")
_G_KEYS = ("G_VRH", "g_vrh", "shear_modulus_vrh", "shear_modulus")
_TENSOR_KEYS = ("elastic_tensor_original", "elastic_tensor")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz")


class DatasetError(ValueError):
    """The dataset as a whole cannot be read (missing path, unrecognised format)."""


@dataclass(frozen=True, kw_only=True, eq=False)
class Material:
    """One crystal to compute, with its reference values if the dataset has them.

    Compared by identity (it holds arrays). ``atoms`` is shared: copy it before changing it.

    Attributes:
        material_id: Unique id within the dataset (the key that resumes a run).
        formula: Reduced formula, e.g. ``"InSb3"``.
        atoms: The periodic cell (positions Å, cell Å, ``pbc`` all True) with only
            numbers, positions, cell and pbc; no calculator, constraints or info.
        reference_k_vrh_gpa: DFT Voigt-Reuss-Hill bulk modulus, GPa, or None.
        reference_g_vrh_gpa: DFT Voigt-Reuss-Hill shear modulus, GPa, or None.
        reference_tensor_gpa: (6, 6) DFT elastic tensor, Voigt order 11 22 33 23 13 12,
            GPa, in the frame of ``atoms``' cell (read-only), or None.
    """

    material_id: str
    formula: str
    atoms: Atoms
    reference_k_vrh_gpa: float | None = None
    reference_g_vrh_gpa: float | None = None
    reference_tensor_gpa: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        if not self.material_id:
            raise ValueError("material_id must be a non-empty string")
        if self.reference_tensor_gpa is not None:
            tensor = np.array(self.reference_tensor_gpa, dtype=np.float64)
            if tensor.shape != (6, 6):
                raise ValueError(f"reference_tensor_gpa must be 6x6, got {tensor.shape}")
            tensor.setflags(write=False)
            object.__setattr__(self, "reference_tensor_gpa", tensor)


@dataclass(frozen=True, kw_only=True)
class DatasetProblem:
    """An entry or file that could not be read as a material.

    Attributes:
        source: Where it came from, e.g. ``"data.json.gz[12] (mp-149)"`` or ``"notes.txt"``.
        message: Why it was skipped, in words.
    """

    source: str
    message: str


class _EntryError(Exception):
    """Internal: one entry or frame is not a computable material (message is the reason)."""


def load_dataset(
    path: Path, *, limit: int | None = None
) -> tuple[list[Material], list[DatasetProblem]]:
    """Reads the materials of a JSON dataset, a structure file or a directory of them.

    Args:
        path: A ``.json``/``.json.gz`` list of entries, a structure file ASE can read
            (CIF, POSCAR, extxyz, ...), or a directory of such files.
        limit: Keep only the first ``limit`` materials (in file and entry order); reading
            stops there. None keeps all.

    Returns:
        The materials in input order, and the problems met before the limit was reached.

    Raises:
        DatasetError: ``path`` does not exist, is an empty directory, or is a single file
            whose format is not recognised.
        ValueError: ``limit`` is negative.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset path does not exist: {path}")
    if path.is_dir():
        files = _folder_files(path)
        if not files:
            raise DatasetError(f"dataset directory contains no files: {path}")
    else:
        files = [path]
        if not _is_json(path):
            try:
                filetype(str(path), read=True)
            except UnknownFileTypeError as exc:
                raise DatasetError(f"unrecognised structure file format: {path} ({exc})") from exc

    materials: list[Material] = []
    problems: list[DatasetProblem] = []
    first_source: dict[str, str] = {}
    if limit == 0:
        return materials, problems
    for file in files:
        for item in _read_file(file, single=not path.is_dir()):
            if isinstance(item, DatasetProblem):
                problems.append(item)
                continue
            source, material = item
            if material.material_id in first_source:
                problems.append(
                    DatasetProblem(
                        source=source,
                        message=f"duplicate material id {material.material_id!r} "
                        f"(first seen in {first_source[material.material_id]}); skipped",
                    )
                )
                continue
            first_source[material.material_id] = source
            materials.append(material)
            if limit is not None and len(materials) >= limit:
                return materials, problems
    return materials, problems


def dataset_sha256(path: Path) -> str:
    """The identity of a dataset, whatever path it is read from: the sha256 of the file,
    or for a directory the sha256 of the ``name sha256`` lines of the files
    :func:`load_dataset` reads (sorted, hidden ones left out).

    Raises:
        OSError: the path cannot be read.
    """
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    listing = "".join(f"{p.name} {file_sha256(p)}\n" for p in _folder_files(path))
    return hashlib.sha256(listing.encode()).hexdigest()


def sample_dataset(materials: Sequence[Material], n: int, seed: int) -> list[Material]:
    """Draws ``n`` distinct materials at random, deterministically for a given seed.

    Args:
        materials: The materials to draw from.
        n: How many to draw; all of them if ``n >= len(materials)``.
        seed: Seed of numpy's default generator; the same seed gives the same sample.

    Returns:
        The sample, in the order the materials had in ``materials``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n >= len(materials):
        return list(materials)
    chosen = np.random.default_rng(seed).choice(len(materials), size=n, replace=False)
    return [materials[i] for i in sorted(int(i) for i in chosen)]


_Item = tuple[str, Material] | DatasetProblem


def _folder_files(path: Path) -> list[Path]:
    """The files a dataset folder holds, as they are read: sorted, hidden ones left out."""
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))


def _is_json(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".json") or name.endswith(".json.gz")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _COMPRESSION_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return Path(name).stem or name


def _read_file(path: Path, *, single: bool) -> Iterator[_Item]:
    """Yields ``(source, material)`` pairs and problems of one file, never raising."""
    if _is_json(path):
        yield from _read_json(path)
        return
    try:
        frames = ase_read(str(path), index=":")
    except UnknownFileTypeError as exc:
        if single:
            raise DatasetError(f"unrecognised structure file format: {path} ({exc})") from exc
        yield DatasetProblem(source=path.name, message=f"not a recognised structure file ({exc})")
        return
    except Exception as exc:  # ASE readers raise anything on a malformed file.
        yield DatasetProblem(
            source=path.name,
            message=f"cannot be read as a structure file: {type(exc).__name__}: {exc}",
        )
        return
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        yield DatasetProblem(source=path.name, message="no structures found in the file")
        return
    stem = _stem(path)
    for i, frame in enumerate(frames):
        default_id = stem if len(frames) == 1 else f"{stem}#{i}"
        source = path.name if len(frames) == 1 else f"{path.name}[{i}]"
        try:
            material_id = _entry_id(frame.info, default=default_id)
            source = f"{source} ({material_id})"
            _check_occupancy(frame.info)
            atoms = _clean_atoms(frame)
            material = _make_material(material_id, None, atoms, frame.info)
        except _EntryError as exc:
            yield DatasetProblem(source=source, message=str(exc))
            continue
        yield source, material


def _read_json(path: Path) -> Iterator[_Item]:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                data = json.load(handle)
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        yield DatasetProblem(source=path.name, message=f"not valid (gzip) JSON: {exc}")
        return
    if isinstance(data, dict) and _looks_like_structure(data):
        data = [{"id": _stem(path), "structure": data}]
    if not isinstance(data, list):
        yield DatasetProblem(
            source=path.name,
            message=f"JSON top level is a {type(data).__name__}; expected a list of entries "
            "or one pymatgen Structure dict",
        )
        return
    for index, entry in enumerate(data):
        source = f"{path.name}[{index}]"
        try:
            if not isinstance(entry, dict):
                raise _EntryError(f"entry is a {type(entry).__name__}, not a JSON object")
            material_id = _entry_id(entry, default=str(index))
            source = f"{source} ({material_id})"
            atoms = _structure_atoms(entry)
            formula = entry.get("formula") if isinstance(entry.get("formula"), str) else None
            material = _make_material(material_id, formula, atoms, entry)
        except _EntryError as exc:
            yield DatasetProblem(source=source, message=str(exc))
            continue
        yield source, material


def _looks_like_structure(data: Mapping[str, Any]) -> bool:
    return "lattice" in data and "sites" in data


def _entry_id(entry: Mapping[str, Any], *, default: str) -> str:
    for key in _ID_KEYS:
        value = entry.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return default


def _structure_atoms(entry: Mapping[str, Any]) -> Atoms:
    raw = entry if _looks_like_structure(entry) else entry.get("structure")
    if raw is None:
        raise _EntryError("entry has no 'structure' (a pymatgen Structure dict)")
    if not isinstance(raw, dict):
        raise _EntryError(f"'structure' is a {type(raw).__name__}, not a pymatgen Structure dict")
    try:
        structure = Structure.from_dict(raw)
    except Exception as exc:  # pymatgen raises KeyError, TypeError, ValueError, ...
        raise _EntryError(
            f"'structure' is not a valid pymatgen Structure: {type(exc).__name__}: {exc}"
        ) from exc
    if not structure.is_ordered:
        raise _EntryError(
            "disordered structure (partial occupancies); only ordered crystals can be computed"
        )
    return _clean_atoms(AseAtomsAdaptor.get_atoms(structure))


def _check_occupancy(info: Mapping[str, Any]) -> None:
    occupancy = info.get("occupancy")
    if not isinstance(occupancy, dict):
        return
    for site, species in occupancy.items():
        if isinstance(species, dict) and any(abs(float(v) - 1.0) > 1e-6 for v in species.values()):
            raise _EntryError(
                f"disordered structure (partial occupancy at site {site}: {species}); "
                "only ordered crystals can be computed"
            )


def _clean_atoms(atoms: Atoms) -> Atoms:
    """A bare copy (numbers, positions, cell, pbc) of a 3D-periodic, non-empty cell."""
    if len(atoms) == 0:
        raise _EntryError("structure has no atoms")
    if not all(atoms.pbc):
        raise _EntryError(f"structure is not periodic in 3 dimensions (pbc={atoms.pbc.tolist()})")
    volume = abs(float(np.linalg.det(atoms.cell.array)))
    if not volume > 1e-6:
        raise _EntryError(f"cell is degenerate (volume {volume:.3g} Å^3)")
    return Atoms(
        numbers=atoms.numbers.copy(),
        positions=atoms.positions.copy(),
        cell=atoms.cell.array.copy(),
        pbc=True,
    )


def _make_material(
    material_id: str, formula: str | None, atoms: Atoms, entry: Mapping[str, Any]
) -> Material:
    if formula is None:
        formula = Composition(atoms.get_chemical_formula()).reduced_formula
    return Material(
        material_id=material_id,
        formula=formula,
        atoms=atoms,
        reference_k_vrh_gpa=_modulus(entry, _K_KEYS),
        reference_g_vrh_gpa=_modulus(entry, _G_KEYS),
        reference_tensor_gpa=_tensor(entry),
    )


def _modulus(entry: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    """The first modulus present under ``keys`` (GPa); a ``{"vrh": x}`` dict is accepted."""
    for key in keys:
        value = entry.get(key)
        if isinstance(value, dict):
            value = value.get("vrh")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise _EntryError(f"reference modulus {key!r} is not a number: {value!r}")
        return float(value) if math.isfinite(float(value)) else None
    return None


def _tensor(entry: Mapping[str, Any]) -> NDArray[np.float64] | None:
    """The reference (6, 6) Voigt tensor in GPa (36 flat numbers accepted), or None."""
    for key in _TENSOR_KEYS:
        value = entry.get(key)
        if value is None:
            continue
        try:
            tensor = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise _EntryError(f"reference tensor {key!r} is not numeric: {exc}") from exc
        if tensor.size != 36:
            raise _EntryError(f"reference tensor {key!r} has shape {tensor.shape}, not (6, 6)")
        tensor = tensor.reshape(6, 6)
        if not np.all(np.isfinite(tensor)):
            raise _EntryError(f"reference tensor {key!r} has non-finite values")
        return tensor
    return None
