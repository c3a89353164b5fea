"""One page per material: its tensors next to DFT's, the fit, the stress-strain points.

``materials/<id>.html`` shows, for every model that computed the material: its status,
its 6x6 elastic tensor next to the DFT tensor (when the reference has one), the RMS fit
residual of each C_ij, the strain-linearity diagnostic (when the run recorded it) and,
per strained Voigt component, the stress-strain points with the fitted slope C_jj (and
DFT's, dashed). ``materials/index.html`` lists every material with its flags. The
charts are inline SVG written here (no script, no plotting library: thousands of pages
stay fast); points carry a ``<title>``, so hovering one names it.
"""

from __future__ import annotations

import html
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from umlip_orchestrator.elastic import STRAIN_DEPENDENCE_FLAG_PCT
from umlip_orchestrator.report.analysis import Analysis
from umlip_orchestrator.report.io import format_value
from umlip_orchestrator.report.reference import ReferenceSet

VOIGT = ("xx", "yy", "zz", "yz", "xz", "xy")
_RESULT_COLUMNS = (
    "material_id", "model", "formula", "status", "error", "elastic_tensor_gpa",
    "fit_residuals_gpa", "born_stable", "min_eigenvalue_gpa", "relax_steps",
    "small_strain_tensor_gpa", "strain_dependence_pct", "max_strain_dependence_pct",
)  # fmt: skip
_STRESS_COLUMNS = ("material_id", "model", "component", "magnitude", "stress_gpa")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1300px; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #eee; } .flag { color: #a00; font-weight: bold; }
.tensors { display: flex; flex-wrap: wrap; gap: 1.5em; } svg { background: #fff; }
"""


def page_name(material_id: str) -> str:
    """The file name of a material's page (ids made safe for a file name)."""
    return f"{_SAFE.sub('_', material_id)}.html"


def page_href(material_id: str) -> str:
    """A material page's link relative to the report folder."""
    return f"materials/{page_name(material_id)}"


@dataclass(frozen=True)
class MaterialFlags:
    """Why a material deserves a look."""

    material_id: str
    formula: str
    unstable_models: tuple[str, ...]
    dft_unstable: bool
    strain_dependent_models: tuple[str, ...]

    @property
    def any(self) -> bool:
        return bool(self.unstable_models or self.dft_unstable or self.strain_dependent_models)

    def marks(self) -> list[str]:
        """The flags in words (empty when there is none)."""
        marks = []
        if self.dft_unstable:
            marks.append("DFT tensor not Born-stable")
        if self.unstable_models:
            marks.append("not Born-stable: " + ", ".join(self.unstable_models))
        if self.strain_dependent_models:
            marks.append("strain-dependent: " + ", ".join(self.strain_dependent_models))
        return marks


def _read(path: Path, wanted: Sequence[str]) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    names = set(pq.read_schema(path).names)
    return pq.read_table(path, columns=[c for c in wanted if c in names]).to_pylist()


def _matrix(values: Sequence[float] | None) -> np.ndarray | None:
    if values is None or len(values) != 36:
        return None
    return np.asarray(values, dtype=np.float64).reshape(6, 6)


def _tensor_table(caption: str, matrix: np.ndarray | None, digits: str = ".1f") -> str:
    if matrix is None:
        return f"<div><b>{html.escape(caption)}</b><p>none</p></div>"
    head = "".join(f"<th>{j + 1}</th>" for j in range(6))
    body = "".join(
        f"<tr><th>{i + 1}</th>"
        + "".join(
            f"<td>{matrix[i, j]:{digits}}</td>" if math.isfinite(matrix[i, j]) else "<td>-</td>"
            for j in range(6)
        )
        + "</tr>"
        for i in range(6)
    )
    return (
        f'<div><b>{html.escape(caption)}</b><table class="tensor">'
        f"<tr><th></th>{head}</tr>{body}</table></div>"
    )


def _chart(
    points: Sequence[tuple[float, float]],
    slope: float,
    dft_slope: float,
    component: int,
    material_id: str,
    model: str,
) -> str:
    """An inline SVG of sigma_j against eps_j with the fitted slope (and DFT's)."""
    width, height, pad = 220, 170, 34
    if not points:
        return f'<svg width="{width}" height="{height}"><text x="10" y="20">no points</text></svg>'
    eps = np.array([p[0] for p in points])
    sig = np.array([p[1] for p in points])
    centre_e, centre_s = float(eps.mean()), float(sig.mean())
    span_e = float(np.abs(eps).max() or 1e-3) * 1.15
    lines = [(slope, "#1f77b4", "")]
    if math.isfinite(dft_slope):
        lines.append((dft_slope, "#444", ' stroke-dasharray="4 3"'))
    ends = [
        centre_s + s * (x - centre_e)
        for s, _, _ in lines
        for x in (-span_e, span_e)
        if math.isfinite(s)
    ]
    low = min([*sig.tolist(), *ends])
    high = max([*sig.tolist(), *ends])
    margin = 0.08 * (high - low or 1.0)
    low, high = low - margin, high + margin

    def x_of(e: float) -> float:
        return pad + (e + span_e) / (2 * span_e) * (width - pad - 8)

    def y_of(s: float) -> float:
        return height - pad + 10 - (s - low) / (high - low) * (height - pad - 4)

    parts = [
        f'<svg class="stress-strain" width="{width}" height="{height}" '
        f'data-component="{component}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{pad}" y="6" width="{width - pad - 8}" height="{height - pad - 2}" '
        'fill="none" stroke="#bbb"/>',
        f'<text x="{width / 2}" y="{height - 4}" font-size="10" text-anchor="middle">'
        f"strain {VOIGT[component]} ({-span_e:.3g} .. {span_e:.3g})</text>",
        f'<text x="10" y="{height / 2}" font-size="10" transform="rotate(-90 10 {height / 2})" '
        f'text-anchor="middle">stress {VOIGT[component]} (GPa)</text>',
    ]
    for s, colour, dash in lines:
        if math.isfinite(s):
            x0, x1 = -span_e, span_e
            parts.append(
                f'<line x1="{x_of(x0):.1f}" y1="{y_of(centre_s + s * (x0 - centre_e)):.1f}" '
                f'x2="{x_of(x1):.1f}" y2="{y_of(centre_s + s * (x1 - centre_e)):.1f}" '
                f'stroke="{colour}"{dash}/>'
            )
    for e, s in points:
        title = f"{material_id} {model}: strain {VOIGT[component]} {e:.4g}, stress {s:.4g} GPa"
        parts.append(
            f'<circle class="point" cx="{x_of(e):.1f}" cy="{y_of(s):.1f}" r="3.5" '
            f'fill="#d62728"><title>{html.escape(title)}</title></circle>'
        )
    parts.append(
        f'<text x="{pad + 4}" y="18" font-size="10">C{component + 1}{component + 1} fit '
        f"{slope:.1f}" + (f", DFT {dft_slope:.1f}" if math.isfinite(dft_slope) else "") + "</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _model_section(
    row: Mapping[str, Any],
    stresses: Sequence[Mapping[str, Any]],
    dft: np.ndarray | None,
) -> str:
    esc = html.escape
    material_id, model = str(row["material_id"]), str(row["model"])
    lines = [f'<section class="model" id="model-{esc(model)}"><h2>{esc(model)}</h2>']
    status = str(row.get("status"))
    facts = [f"status {status}"]
    if row.get("error"):
        facts.append(f"error: {row['error']}")
    if row.get("born_stable") is not None:
        stable = "Born-stable" if row["born_stable"] else "NOT Born-stable"
        facts.append(f"{stable} (min eigenvalue {format_value(row.get('min_eigenvalue_gpa'))} GPa)")
    if row.get("relax_steps") is not None:
        facts.append(f"relaxation steps {row['relax_steps']}")
    dependence = row.get("max_strain_dependence_pct")
    if dependence is not None and math.isfinite(dependence):
        flag = dependence > STRAIN_DEPENDENCE_FLAG_PCT
        facts.append(
            f'<span class="{"flag" if flag else ""}">largest strain dependence '
            f"{dependence:.1f} % (flag above {STRAIN_DEPENDENCE_FLAG_PCT:g} %)</span>"
        )
    lines.append("<p>" + "; ".join(f if f.startswith("<span") else esc(f) for f in facts) + "</p>")
    tensor = _matrix(row.get("elastic_tensor_gpa"))
    tables = [_tensor_table(f"{model} C_ij (GPa)", tensor)]
    tables.append(_tensor_table("DFT C_ij (GPa)", dft))
    if tensor is not None and dft is not None:
        tables.append(_tensor_table(f"{model} - DFT (GPa)", tensor - dft))
    tables.append(
        _tensor_table(
            "fit RMS residual per C_ij (GPa)", _matrix(row.get("fit_residuals_gpa")), ".3f"
        )
    )
    small = _matrix(row.get("small_strain_tensor_gpa"))
    if small is not None:
        tables.append(_tensor_table("C_ij from the smallest strains only (GPa)", small))
    lines.append('<div class="tensors">' + "".join(tables) + "</div>")
    per_component = row.get("strain_dependence_pct")
    if per_component:
        cells = "".join(f"<td>{format_value(v)}</td>" for v in per_component)
        lines.append(
            "<p>Strain dependence per strained component, % (difference between the "
            "tensor column from the smallest strains and from all strains):</p>"
            f"<table><tr>{''.join(f'<th>{v}</th>' for v in VOIGT)}</tr><tr>{cells}</tr></table>"
        )
    by_component: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for point in stresses:
        stress = point.get("stress_gpa")
        component = int(point["component"])
        if stress is not None and len(stress) == 6 and math.isfinite(stress[component]):
            by_component[component].append((float(point["magnitude"]), float(stress[component])))
    if by_component:
        charts = []
        for component in range(6):
            slope = float(tensor[component, component]) if tensor is not None else math.nan
            dft_slope = float(dft[component, component]) if dft is not None else math.nan
            charts.append(
                _chart(by_component[component], slope, dft_slope, component, material_id, model)
            )
        lines.append(
            "<p>Stress-strain points per strained component (red; hover for values), the "
            "fitted slope C_jj (blue) and DFT's (dashed), drawn through the points' centre. "
            'Strain: engineering strain for shear.</p><div class="tensors">'
            + "".join(charts)
            + "</div>"
        )
    else:
        lines.append("<p>No stress-strain points for this model (none in stresses.parquet).</p>")
    lines.append("</section>")
    return "\n".join(lines)


def write_material_pages(
    results_dir: Path, analysis: Analysis, reference: ReferenceSet, out_dir: Path
) -> list[MaterialFlags]:
    """Writes ``materials/<id>.html`` and ``materials/index.html``; returns the flags."""
    results = _read(Path(results_dir) / "results.parquet", _RESULT_COLUMNS)
    stresses = _read(Path(results_dir) / "stresses.parquet", _STRESS_COLUMNS)
    points: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for point in stresses:
        points[(str(point["material_id"]), str(point["model"]))].append(point)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in results:
        rows[str(row["material_id"])].append(row)
    references = reference.by_id()
    pairs_by_material: dict[str, list[Any]] = defaultdict(list)
    for pair in analysis.pairs:
        pairs_by_material[pair.material_id].append(pair)
    labels = {m.property: m.label for m in analysis.metrics}
    folder = Path(out_dir) / "materials"
    folder.mkdir(parents=True, exist_ok=True)
    flags: list[MaterialFlags] = []
    for material_id in sorted(rows):
        model_rows = sorted(rows[material_id], key=lambda r: str(r["model"]))
        ref = references.get(material_id)
        dft = _matrix(reference.tensors.get(material_id))
        formula = str(model_rows[0].get("formula") or (ref.formula if ref else ""))
        flag = MaterialFlags(
            material_id=material_id,
            formula=formula,
            unstable_models=tuple(
                str(r["model"]) for r in model_rows if r.get("born_stable") is False
            ),
            dft_unstable=bool(ref is not None and ref.dft_stable is False),
            strain_dependent_models=tuple(
                str(r["model"])
                for r in model_rows
                if (d := r.get("max_strain_dependence_pct")) is not None
                and math.isfinite(d)
                and d > STRAIN_DEPENDENCE_FLAG_PCT
            ),
        )
        flags.append(flag)
        (folder / page_name(material_id)).write_text(
            _page(
                material_id,
                formula,
                ref,
                dft,
                model_rows,
                points,
                pairs_by_material[material_id],
                labels,
            ),
            encoding="utf-8",
        )
    (folder / "index.html").write_text(_index(flags), encoding="utf-8")
    return flags


def _page(
    material_id: str,
    formula: str,
    ref: Any,
    dft: np.ndarray | None,
    model_rows: Sequence[Mapping[str, Any]],
    points: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
    pairs: Sequence[Any],
    labels: Mapping[str, str],
) -> str:
    esc = html.escape
    title = f"{material_id} ({formula})"
    body = [
        f"<h1>{esc(title)}</h1>",
        '<p><a href="../index.html">report</a> · <a href="index.html">all materials</a></p>',
    ]
    if ref is None:
        body.append("<p>Not in the DFT reference.</p>")
    else:
        stable = {True: "Born-stable", False: "NOT Born-stable", None: "no DFT tensor"}[
            ref.dft_stable
        ]
        used = "used in the statistics" if ref.included else f"left out: {ref.exclusion}"
        body.append(f"<p>DFT reference ({esc(ref.source)}): {esc(stable)}; {esc(used)}.</p>")
    if pairs:
        cells = "".join(
            f"<tr><td>{esc(p.model)}</td><td>{esc(labels.get(p.property, p.property))}</td>"
            f"<td>{format_value(p.predicted)}</td><td>{format_value(p.reference)}</td>"
            f"<td>{format_value(p.relative_error_pct)}</td></tr>"
            for p in pairs
        )
        body.append(
            '<table class="pairs"><tr><th>model</th><th>property</th><th>model value</th>'
            f"<th>DFT</th><th>relative error (%)</th></tr>{cells}</table>"
        )
    for row in model_rows:
        body.append(_model_section(row, points.get((material_id, str(row["model"])), ()), dft))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _index(flags: Sequence[MaterialFlags]) -> str:
    esc = html.escape
    rows = []
    for flag in flags:
        marks = flag.marks()
        rows.append(
            f'<tr><td><a href="{esc(page_name(flag.material_id))}">{esc(flag.material_id)}</a></td>'
            f'<td>{esc(flag.formula)}</td><td class="{"flag" if marks else ""}">'
            f"{esc('; '.join(marks))}</td></tr>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>materials</title>'
        f"<style>{_CSS}</style></head>\n<body>\n<h1>Materials</h1>"
        '<p><a href="../index.html">report</a></p>'
        f"<table><tr><th>material</th><th>formula</th><th>flags</th></tr>{''.join(rows)}</table>"
        "\n</body></html>\n"
    )
