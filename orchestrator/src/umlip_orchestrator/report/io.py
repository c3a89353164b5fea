"""Report tables: frozen dataclass rows -> Arrow/Parquet, Markdown and HTML tables.

Every report table is a sequence of rows of one frozen dataclass; its Arrow schema
comes from the annotations (``str``, ``int``, ``float``, ``bool``, optionally ``| None``).
A field's unit follows from its name (``_gpa``: GPa, ``_pct``: %, ``_s``: s, ``_k``:
K) and is stored in the field's metadata (``b"unit"``), as in the results table.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from umlip_wire.provenance import PROVENANCE_KIND

_SCALARS = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
_UNIT_SUFFIXES = {"_gpa": "GPa", "_pct": "%", "_s": "s", "_k": "K", "_per_second": "1/s"}


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _SCALARS[inner], True
    return _SCALARS[annotation], False


def unit_of(name: str) -> str:
    """The unit a column name implies by its suffix, ``""`` if none."""
    for suffix in sorted(_UNIT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _UNIT_SUFFIXES[suffix]
    return ""


def schema_of(row_type: type) -> pa.Schema:
    """The Arrow schema of a row dataclass (units in field metadata)."""
    hints = typing.get_type_hints(row_type)
    fields = []
    for field in dataclasses.fields(row_type):
        arrow_type, nullable = _arrow_type(hints[field.name])
        metadata = {b"unit": unit_of(field.name).encode()}
        fields.append(pa.field(field.name, arrow_type, nullable=nullable, metadata=metadata))
    doc = (row_type.__doc__ or "").strip().splitlines()[0] if row_type.__doc__ else ""
    return pa.schema(
        fields,
        metadata={b"umlip.report_table": row_type.__name__.encode(), b"description": doc.encode()},
    )


def to_table(rows: Sequence[Any], row_type: type) -> pa.Table:
    """Rows of ``row_type`` as an Arrow table of :func:`schema_of` (NaN stays NaN)."""
    schema = schema_of(row_type)
    data = [{name: getattr(row, name) for name in schema.names} for row in rows]
    return pa.Table.from_pylist(data, schema=schema)


def write_parquet(path: Path, rows: Sequence[Any], row_type: type) -> Path:
    """Writes rows as one Parquet file; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(rows, row_type), path)
    return path


def read_rows(path: Path, row_type: type) -> list[Any]:
    """Reads a Parquet file written by :func:`write_parquet` back into rows."""
    names = [f.name for f in dataclasses.fields(row_type)]
    return [row_type(**row) for row in pq.read_table(path, columns=names).to_pylist()]


def format_value(value: Any) -> str:
    """A cell: floats to 4 significant digits, NaN/None as ``-``, bools as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


def _columns(row_type: type, columns: Sequence[str] | None) -> list[str]:
    return list(columns) if columns else [f.name for f in dataclasses.fields(row_type)]


def _cells(rows: Sequence[Any], names: Sequence[str]) -> list[list[str]]:
    return [[format_value(getattr(row, n)) for n in names] for row in rows]


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def grid_markdown(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table of text cells."""
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in cells]
    if not cells:
        lines.append("| " + " | ".join(["(none)"] + [""] * (len(header) - 1)) + " |")
    return "\n".join(lines)


def grid_html(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """An HTML ``<table>`` of text cells, escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = [
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in cells
    ]
    if not cells:
        body.append(f'<tr><td colspan="{len(header)}">(none)</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def markdown_table(
    rows: Sequence[Any], row_type: type, columns: Sequence[str] | None = None
) -> str:
    """A GitHub Markdown table of dataclass rows (selected columns, in order)."""
    names = _columns(row_type, columns)
    return grid_markdown(names, _cells(rows, names))


def html_table(rows: Sequence[Any], row_type: type, columns: Sequence[str] | None = None) -> str:
    """An HTML ``<table>`` of dataclass rows (selected columns, in order)."""
    names = _columns(row_type, columns)
    return grid_html(names, _cells(rows, names))


def run_services(run_dir: Path) -> dict[str, Any]:
    """The services (GetModelInfo as recorded) of a run's ``manifest.json``, by model;
    later runs into the same folder win. Empty when there is no readable manifest."""
    try:
        manifest = json.loads((Path(run_dir) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    runs = manifest.get("runs", []) if isinstance(manifest, dict) else []
    services: dict[str, Any] = {}
    for entry in runs:
        if isinstance(entry, dict) and isinstance(entry.get("services"), dict):
            services.update(entry["services"])
    return services


def provenance_lines(services_b: Mapping[str, Any], models_b: Collection[str]) -> list[str]:
    """One line per fine-tuned model of run B: base checkpoint and label source (labels
    that are not ``dft`` are said not to be DFT)."""
    lines = []
    for model in models_b:
        provenance = (services_b.get(model) or {}).get("provenance") or {}
        if provenance.get("kind") != PROVENANCE_KIND:
            continue
        source = provenance.get("label_source", "unknown")
        note = "" if source == "dft" else " (not DFT labels)"
        lines.append(
            f"{model}: fine-tuned from {provenance.get('base_checkpoint', '?')} "
            f"(sha256 {provenance.get('base_checkpoint_sha256', '?')[:12]}) on labels "
            f"label_source={source}{note}, training data sha256 "
            f"{provenance.get('training_data_sha256', '?')[:12]}"
        )
    return lines
