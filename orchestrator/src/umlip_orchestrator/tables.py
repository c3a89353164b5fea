"""Arrow schemas of the result tables, and a results store that survives being killed.

The schemas are derived from the dataclasses in :mod:`umlip_orchestrator.records`
(``MaterialResult`` -> ``results``, ``DeformationRecord`` -> ``stresses``); the unit and
description of every field live in one mapping, :data:`FIELD_INFO`, and end up in each
Arrow field's metadata (``b"unit"``, ``b"description"``). ``docs/tables.md`` is the output
of :func:`schema_markdown` (regenerate: ``python -m umlip_orchestrator.tables > docs/tables.md``).

Store layout under ``out_dir``::

    parts/results/model=<model>/part-<token>.parquet   one file per write() and model
    parts/stresses/model=<model>/part-<token>.parquet  same token as its results part
    results.parquet, stresses.parquet                  compact(): deduplicated, sorted
    manifest.json                                      settings of every run (history)

Files appear by atomic rename of hidden ``*.tmp`` files (ignored), so a kill never leaves
a half file visible. A write renames its results part after its stresses part: a key
(material_id, model) is done once its results row is on disk. A key written twice: the
last write wins, with the stress rows of that same write.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from umlip_orchestrator.records import DeformationRecord, MaterialResult

logger = logging.getLogger(__name__)
SCHEMA_VERSION = 1
_NO_UNIT, _DIMLESS = "", "dimensionless"  # no unit: text, flags, counts and indices

#: Field name -> (unit, description), for every field of both tables.
FIELD_INFO: dict[str, tuple[str, str]] = {
    "material_id": (_NO_UNIT, "Material id from the dataset (e.g. mp-149)."),
    "model": (_NO_UNIT, "Model name as reported by the service's GetModelInfo."),
    "formula": (_NO_UNIT, "Reduced chemical formula."),
    "n_atoms": (_NO_UNIT, "Number of atoms in the cell."),
    "status": (_NO_UNIT, "ok, failed or skipped."),
    "error": (_NO_UNIT, "Why the row failed or was skipped; null when ok."),
    "ion_mode": (_NO_UNIT, "How ions are treated in deformed cells (clamped or relaxed)."),
    "relax_converged": (_NO_UNIT, "Whether the relaxation of the starting cell converged."),
    "relax_steps": (_NO_UNIT, "Optimiser steps of that relaxation."),
    "relaxed_energy_ev": ("eV", "Total energy of the relaxed cell."),
    "relaxed_volume_a3": ("Å^3", "Volume of the relaxed cell."),
    "relaxed_cell_a": ("Å", "Relaxed cell, 9 numbers: row vectors, row-major."),
    "relaxed_positions_a": ("Å", "Relaxed Cartesian positions, 3 n_atoms numbers."),
    "atomic_numbers": (_NO_UNIT, "Atomic numbers, n_atoms numbers."),
    "n_deformations": (_NO_UNIT, "Number of deformed cells computed."),
    "deformations_converged": (_NO_UNIT, "Relaxed-ion mode: deformed cells that converged."),
    "elastic_tensor_gpa": ("GPa", "Elastic tensor, Voigt 6x6 row-major (11 22 33 23 13 12)."),
    "fit_residuals_gpa": ("GPa", "RMS residual of the fit behind each C_ij, 6x6 row-major."),
    "small_strain_tensor_gpa": (
        "GPa",
        "Elastic tensor fitted from the smallest strain magnitude of each component only "
        "(with the zero-strain point), Voigt 6x6 row-major, symmetrised; null where there "
        "is no tensor or that subset cannot be fitted.",
    ),
    "strain_dependence_pct": (
        "%",
        "Strain dependence per strained Voigt component j (xx yy zz yz xz xy), 6 numbers: "
        "100 ||C_all[:, j] - C_small[:, j]|| / max(||C_all[:, j]||, 1 GPa) over the "
        "unsymmetrised all-strain and smallest-strain tensors; 0 for a linear response.",
    ),
    "max_strain_dependence_pct": (
        "%",
        "Largest of strain_dependence_pct; above 10 % a comparison flags the material.",
    ),
    "k_voigt_gpa": ("GPa", "Voigt bulk modulus."),
    "k_reuss_gpa": ("GPa", "Reuss bulk modulus."),
    "k_vrh_gpa": ("GPa", "Voigt-Reuss-Hill bulk modulus."),
    "g_voigt_gpa": ("GPa", "Voigt shear modulus."),
    "g_reuss_gpa": ("GPa", "Reuss shear modulus."),
    "g_vrh_gpa": ("GPa", "Voigt-Reuss-Hill shear modulus."),
    "youngs_modulus_gpa": ("GPa", "Young's modulus from the VRH moduli."),
    "poisson_ratio": (_DIMLESS, "Poisson's ratio from the VRH moduli."),
    "pugh_ratio": (_DIMLESS, "Pugh ratio K_VRH / G_VRH."),
    "universal_anisotropy": (_DIMLESS, "Universal anisotropy index 5 G_V/G_R + K_V/K_R - 6."),
    "cauchy_pressure_gpa": ("GPa", "Cauchy pressure C12 - C44."),
    "debye_temperature_k": ("K", "Debye temperature from K_VRH, G_VRH and the density."),
    "born_stable": (_NO_UNIT, "Whether the tensor is positive definite (Born stability)."),
    "min_eigenvalue_gpa": ("GPa", "Smallest eigenvalue of the symmetrised 6x6 tensor."),
    "wall_time_s": ("s", "Wall time from the start of its relaxation to its fit."),
    "seconds_per_material": (
        "s",
        "Its actor's wall time until it completed, divided by the materials that actor had "
        "completed by then (amortised cost under continuous batching).",
    ),
    "reference_k_vrh_gpa": ("GPa", "DFT reference VRH bulk modulus from the dataset."),
    "reference_g_vrh_gpa": ("GPa", "DFT reference VRH shear modulus from the dataset."),
    "index": (_NO_UNIT, "Deformation index, 0 .. n_deformations - 1."),
    "component": (_NO_UNIT, "Voigt component strained: 0..5 = xx yy zz yz xz xy."),
    "magnitude": (_DIMLESS, "Applied strain amount (engineering strain for shear)."),
    "green_lagrange_strain": (_DIMLESS, "Green-Lagrange strain tensor, 9 numbers, row-major."),
    "stress_gpa": ("GPa", "Stress of the deformed cell, 6 numbers Voigt, tension positive."),
    "converged": (_NO_UNIT, "Relaxed-ion mode: whether the ions of this cell converged."),
    "deformed_positions_a": (
        "Å",
        "Relaxed-ion mode: relaxed Cartesian positions in the deformed cell, 3 n_atoms "
        "numbers; null in clamped mode (homogeneously deformed positions) or if it failed.",
    ),
}

_SCALARS = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """Maps a dataclass annotation to (Arrow type, nullable)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union annotation: {annotation}")
        return _arrow_type(args[0])[0], True
    if origin is Literal and all(isinstance(a, str) for a in typing.get_args(annotation)):
        return pa.string(), False
    if origin is list:
        (item,) = typing.get_args(annotation)
        return pa.list_(pa.field("element", _arrow_type(item)[0])), False  # Parquet's name
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    raise TypeError(f"no Arrow type for annotation {annotation!r}")


def schema_for(record_type: type, table: str) -> pa.Schema:
    """Builds the Arrow schema of a records dataclass, with unit and description metadata.

    Args:
        record_type: A dataclass from :mod:`umlip_orchestrator.records`.
        table: The table's name, stored in the schema metadata (``b"umlip.table"``).

    Raises:
        KeyError: A field has no entry in :data:`FIELD_INFO`.
        TypeError: A field's annotation has no Arrow type.
    """
    hints = typing.get_type_hints(record_type)
    fields = []
    for field in dataclasses.fields(record_type):
        arrow_type, nullable = _arrow_type(hints[field.name])
        if field.name not in FIELD_INFO:
            raise KeyError(f"{record_type.__name__}.{field.name} has no entry in FIELD_INFO")
        unit, description = FIELD_INFO[field.name]
        metadata = {b"unit": unit.encode(), b"description": description.encode()}
        fields.append(pa.field(field.name, arrow_type, nullable=nullable, metadata=metadata))
    metadata = {b"umlip.table": table.encode(), b"umlip.schema_version": b"%d" % SCHEMA_VERSION}
    return pa.schema(fields, metadata=metadata)


RESULTS_SCHEMA: pa.Schema = schema_for(MaterialResult, "results")
STRESSES_SCHEMA: pa.Schema = schema_for(DeformationRecord, "stresses")
_TABLES = {
    "results": (RESULTS_SCHEMA, MaterialResult),
    "stresses": (STRESSES_SCHEMA, DeformationRecord),
}
_SORT_KEYS = {"results": ["material_id", "model"], "stresses": ["material_id", "model", "index"]}


_MD_INTRO = """\
# Result tables

<!-- Generated by `python -m umlip_orchestrator.tables > docs/tables.md`;
     do not edit by hand (a test checks it matches the schemas). -->

A run writes Parquet files under its output directory: `results.parquet` and
`stresses.parquet` (from `ResultStore.compact()`), the part files they are made of
(`parts/<table>/model=<model>/part-<token>.parquet`, one per write and model) and
`manifest.json` (the settings of every run that wrote there). Each Arrow field
carries its unit and description in its metadata (`unit`, `description`); an
empty unit marks text, flags, counts and indices.
"""


def schema_markdown() -> str:
    """The Markdown reference of both tables (the content of ``docs/tables.md``)."""
    lines = [_MD_INTRO + f"Schema version: {SCHEMA_VERSION}."]
    for table, (schema, record_type) in _TABLES.items():
        doc = (record_type.__doc__ or "").strip().splitlines()[0].replace("``", "`")
        sort = "(" + ", ".join(_SORT_KEYS[table]) + ")"
        lines += ["", f"## `{table}` (`{record_type.__name__}`)", "", doc, f"Sorted by {sort}."]
        lines += ["", "| Field | Arrow type | Nullable | Unit | Description |", "|" + "---|" * 5]
        for field in schema:
            unit = field.metadata[b"unit"].decode()
            desc = field.metadata[b"description"].decode().replace("|", "\\|")
            null = "yes" if field.nullable else "no"
            lines.append(f"| `{field.name}` | {field.type} | {null} | {unit} | {desc} |")
    return "\n".join(lines) + "\n"


def records_to_table(records: Sequence[Any], table: str) -> pa.Table:
    """Converts records of one table's dataclass into an Arrow table of its schema.

    Raises:
        TypeError: A record is not of the table's dataclass.
        ValueError: A non-nullable field holds None.
    """
    schema, record_type = _TABLES[table]
    rows = []
    for record in records:
        if not isinstance(record, record_type):
            raise TypeError(f"{table} rows must be {record_type.__name__}, got {type(record)}")
        rows.append({name: _plain(getattr(record, name)) for name in schema.names})
    arrow = pa.Table.from_pylist(rows, schema=schema)
    for field in schema:
        if not field.nullable and arrow[field.name].null_count:
            raise ValueError(f"{table}.{field.name} must not be None")
    return arrow


def _plain(value: Any) -> Any:
    """Numpy arrays and scalars as Python lists and scalars; anything else unchanged."""
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Writes ``path`` through a hidden temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Casts a stored table to ``schema``; columns added since it was written become null."""
    have = set(table.column_names)
    if missing := [f.name for f in schema if f.name not in have and not f.nullable]:
        raise ValueError(f"missing required columns {missing}")
    columns = [
        table[f.name].cast(f.type) if f.name in have else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class ResultStore:
    """Parquet results of a run, written as materials finish, resumable after a kill.

    Rows of one material must be written in one :meth:`write` call: its results row
    with its stress rows. Unreadable part files are logged, ignored, and listed in
    :attr:`unreadable_parts` (as ``(path, reason)``, refreshed by every read).

    Args:
        out_dir: The run's output directory (created on first write).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.manifest_path = self.out_dir / "manifest.json"
        self.unreadable_parts: list[tuple[Path, str]] = []

    def write(
        self, results: Sequence[MaterialResult], stresses: Sequence[DeformationRecord] = ()
    ) -> None:
        """Writes one part file per model and table; results parts are renamed last.

        Raises:
            ValueError: A stress row has no results row in this call, a (material, model)
                has two results rows, or a required field is None.
        """
        keys = {(r.material_id, r.model) for r in results}
        if len(keys) != len(results):
            raise ValueError("a write must not hold two results rows of one (material, model)")
        if orphans := {(s.material_id, s.model) for s in stresses} - keys:
            raise ValueError(f"stress rows without a results row in the same write: {orphans}")
        token = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        for table, records in (("stresses", stresses), ("results", results)):
            for model in dict.fromkeys(r.model for r in records):
                arrow = records_to_table([r for r in records if r.model == model], table)
                path = self._model_dir(table, model) / f"part-{token}.parquet"
                _atomic_write(path, lambda handle, arrow=arrow: pq.write_table(arrow, handle))

    def done_keys(self) -> set[tuple[str, str]]:
        """The (material_id, model) pairs that have a results row (any status)."""
        self.unreadable_parts = []
        return set(_keys(self._load("results", columns=["material_id", "model"])))

    def read_results(self) -> pa.Table:
        """All results rows, one per (material_id, model) (last write wins), sorted."""
        return self._read_both()[0]

    def read_stresses(self) -> pa.Table:
        """The stress rows belonging to the rows of :meth:`read_results`, sorted."""
        return self._read_both()[1]

    def compact(self, *, remove_parts: bool = False) -> tuple[Path, Path]:
        """Writes ``results.parquet`` and ``stresses.parquet`` (deduplicated, sorted).

        Args:
            remove_parts: Delete the part files that went into them (after both renames).

        Returns:
            The paths of the results and stresses files.
        """
        parts = self._part_files("results") + self._part_files("stresses")
        results, stresses = self._read_both()
        paths = (self.out_dir / "results.parquet", self.out_dir / "stresses.parquet")
        for path, table in zip(paths, (results, stresses), strict=True):
            _atomic_write(path, lambda handle, table=table: pq.write_table(table, handle))
        for part in set(parts) - {p for p, _ in self.unreadable_parts} if remove_parts else ():
            part.unlink(missing_ok=True)
        return paths

    def write_manifest(self, run: Mapping[str, Any]) -> dict[str, Any]:
        """Adds one run's settings to ``manifest.json``'s ``runs`` history, atomically.

        An entry whose ``run_id`` equals that of ``run`` is replaced (a run updating its
        own entry); otherwise ``run`` is appended. A ``written_at`` UTC time is added.

        Returns:
            The whole manifest as written.
        """
        manifest = self.read_manifest()
        entry = {**run, "written_at": datetime.now(UTC).isoformat()}
        runs, run_id = manifest["runs"], run.get("run_id")
        same = [i for i, r in enumerate(runs) if run_id is not None and r.get("run_id") == run_id]
        index = same[-1] if same else len(runs)  # replace its own entry, or append
        runs[index : index + 1] = [entry]
        manifest["schema_version"] = SCHEMA_VERSION
        text = json.dumps(manifest, indent=2, sort_keys=False, default=_json_default) + "\n"
        _atomic_write(self.manifest_path, lambda handle: handle.write(text.encode()))
        return manifest

    def read_manifest(self) -> dict[str, Any]:
        """The manifest, or an empty one (``{"schema_version": 1, "runs": []}``) if none.

        Raises:
            ValueError: The manifest exists but is not a JSON object with a ``runs`` list.
        """
        if not self.manifest_path.exists():
            return {"schema_version": SCHEMA_VERSION, "runs": []}
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"unreadable manifest {self.manifest_path}: {exc}") from exc
        if not isinstance(manifest, dict) or not isinstance(manifest.setdefault("runs", []), list):
            raise ValueError(f"manifest {self.manifest_path} is not an object with a runs list")
        return manifest

    def _model_dir(self, table: str, model: str) -> Path:
        if not model:
            raise ValueError("model must be a non-empty string")
        return self.out_dir / "parts" / table / f"model={quote(model, safe='')}"

    def _part_files(self, table: str) -> list[Path]:
        """Part files in write order (token order), hidden temporary files excluded."""
        files = (self.out_dir / "parts" / table).glob("model=*/part-*.parquet")
        return sorted(files, key=lambda p: p.name)

    def _load(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """Compacted file then parts, in write order, with a ``_token`` column added."""
        full = _TABLES[table][0]
        schema = pa.schema([full.field(c) for c in columns]) if columns else full
        base = self.out_dir / f"{table}.parquet"
        sources = [(base, "")] if base.exists() else []
        sources += [(p, p.name) for p in self._part_files(table)]
        pieces = []
        for path, token in sources:
            try:
                piece = _conform(pq.ParquetFile(path).read(columns=columns), schema)
            except Exception as exc:  # corrupt, truncated or foreign file: skip it
                logger.warning("ignoring unreadable part file %s: %s", path, exc)
                self.unreadable_parts.append((path, f"{type(exc).__name__}: {exc}"))
                continue
            pieces.append(
                piece.append_column("_token", pa.array([token] * len(piece), pa.string()))
            )
        if not pieces:
            return schema.empty_table().append_column("_token", pa.array([], pa.string()))
        return pa.concat_tables(pieces)

    def _read_both(self) -> tuple[pa.Table, pa.Table]:
        """Deduplicated, sorted results and their matching stresses."""
        self.unreadable_parts = []
        results, stresses = self._load("results"), self._load("stresses")
        rows = _keys(results, "_token")  # in write order: the last row of a key wins
        latest = {row[:2]: i for i, row in enumerate(rows)}
        winner = {key: rows[i] for key, i in latest.items()}
        results = results.take(pa.array(sorted(latest.values()), type=pa.int64()))
        mask = [winner.get(row[:2]) == row for row in _keys(stresses, "_token")]
        stresses = stresses.filter(pa.array(mask, pa.bool_()))
        return _finish(results, "results"), _finish(stresses, "stresses")


def _finish(table: pa.Table, name: str) -> pa.Table:
    """Drops the ``_token`` column and sorts by the table's keys."""
    table = table.drop_columns(["_token"]).sort_by([(k, "ascending") for k in _SORT_KEYS[name]])
    return table.replace_schema_metadata(_TABLES[name][0].metadata)


def _keys(table: pa.Table, *extra: str) -> list[tuple[Any, ...]]:
    """Rows of (material_id, model, *extra) as tuples."""
    columns = [table[name].to_pylist() for name in ("material_id", "model", *extra)]
    return list(zip(*columns, strict=True))


def _json_default(value: Any) -> Any:
    """Paths as strings, numpy values as Python values; anything else is an error."""
    if isinstance(value, Path | np.ndarray | np.generic):
        return str(value) if isinstance(value, Path) else _plain(value)
    raise TypeError(f"manifest values must be JSON-serialisable, got {type(value).__name__}")


if __name__ == "__main__":
    print(schema_markdown(), end="")
