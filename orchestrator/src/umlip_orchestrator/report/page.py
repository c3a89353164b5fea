"""The human-readable report: ``summary.md`` and a self-contained ``index.html``.

Both show the same sections (tables); the HTML page adds the figures. The page uses
only relative links and inline CSS: no script, stylesheet or font from elsewhere, so it
reads offline and from a copied directory.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, fields

from umlip_orchestrator.report.analysis import Analysis, Overview
from umlip_orchestrator.report.figures import Figure
from umlip_orchestrator.report.io import format_value, grid_html, grid_markdown
from umlip_orchestrator.report.spec import PROPERTIES

_METRIC_COLUMNS = (
    "model", "label", "unit", "n", "n_failed", "n_skipped", "n_no_value", "mae", "pearson_r",
    "mean_model", "mean_dft", "mape_pct", "n_small_reference", "rel_median_pct", "rel_mean_pct",
    "rel_q1_pct", "rel_q3_pct", "rel_iqr_pct",
)  # fmt: skip
_STABILITY_COLUMNS = (
    "model", "n_rows", "n_no_call", "n", "tp", "fp", "fn", "tn", "accuracy", "precision",
    "recall", "f1",
)  # fmt: skip
_COST_COLUMNS = (
    "model", "n_rows", "n_ok", "n_failed", "n_skipped", "seconds_per_material_mean_s",
    "seconds_per_material_std_s", "materials_per_second", "wall_time_mean_s",
)  # fmt: skip

RULES = (
    "Pairs count only where both the model value and the DFT value are finite; failed and "
    "skipped rows, and ok rows without a finite value (n_no_value), are counted, never "
    "averaged. Relative error = 100 (model - DFT) / |DFT|; materials with |DFT| < epsilon "
    "(n_small_reference) are left out of MAPE and of the relative-error statistics but "
    "kept in n, MAE, R and the means. Properties use only DFT-stable materials; stability "
    "scores use every material with a DFT tensor. See docs/report.md."
)


@dataclass(frozen=True)
class Section:
    """A titled table shown in both ``summary.md`` and ``index.html``.

    Attributes:
        anchor: HTML id.
        title: Heading.
        text: One paragraph above the table.
        header: Column names.
        cells: Formatted cells, row by row.
        table_file: The Parquet file holding the full table, if any.
    """

    anchor: str
    title: str
    text: str
    header: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]
    table_file: str | None = None


def _rows(rows: Sequence[object], columns: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(format_value(getattr(r, c)) for c in columns) for r in rows)


def sections(analysis: Analysis) -> list[Section]:
    """The report's sections, in page order."""
    overview = [
        (f.name, format_value(getattr(analysis.overview, f.name))) for f in fields(Overview)
    ]
    by_key = {(m.model, m.property): m for m in analysis.metrics}
    mape = tuple(
        (model, *(format_value(by_key[(model, p.key)].mape_pct) for p in PROPERTIES))
        for model in analysis.models
    )
    result = [
        Section(
            "overview",
            "Overview",
            "Materials in the results and in the DFT reference.",
            ("quantity", "value"),
            tuple(overview),
            "overview.parquet",
        ),
        Section(
            "mape",
            "MAPE (%)",
            "Mean absolute percentage error per model and property.",
            ("model", *(p.label for p in PROPERTIES)),
            mape,
            "metrics.parquet",
        ),
        Section(
            "metrics",
            "Errors against DFT",
            "One row per model and property; MAE and means in the property's unit, "
            "relative errors in %.",
            _METRIC_COLUMNS,
            _rows(analysis.metrics, _METRIC_COLUMNS),
            "metrics.parquet",
        ),
    ]
    if analysis.stability:
        result.append(
            Section(
                "stability",
                "Born stability against DFT",
                "Positive class = stable. tp: stable by both; fp: model stable, DFT not; fn: "
                "model unstable, DFT stable; tn: unstable by both. n_no_call: failed, skipped "
                "or no call.",
                _STABILITY_COLUMNS,
                _rows(analysis.stability, _STABILITY_COLUMNS),
                "stability.parquet",
            )
        )
    else:
        result.append(
            Section(
                "stability",
                "Born stability against DFT",
                "The reference has no DFT elastic tensors, so no DFT stability call: pass a "
                "full-tensor reference (--reference) for stability scores.",
                ("model", "n"),
                (),
                "stability.parquet",
            )
        )
    names = list(dict.fromkeys(r.model_a for r in analysis.agreement))
    pair = {(r.model_a, r.model_b): r for r in analysis.agreement}
    agreement = tuple(
        (a, *(f"{format_value(pair[(a, b)].agreement)} (n={pair[(a, b)].n})" for b in names))
        for a in names
    )
    result += [
        Section(
            "agreement",
            "Stability agreement",
            "Fraction of materials on which two models (or a model and DFT) make the same "
            "Born-stability call, over the materials both called.",
            ("", *names),
            agreement,
            "stability_agreement.parquet",
        ),
        Section(
            "cost",
            "Cost",
            "Status counts over all rows of each model; timing over its "
            "ok rows (seconds per material: the worker batch's wall time / its materials).",
            _COST_COLUMNS,
            _rows(analysis.cost, _COST_COLUMNS),
            "cost.parquet",
        ),
    ]
    return result


def summary_markdown(
    analysis: Analysis, parts: Sequence[Section], figures: Sequence[Figure], title: str
) -> str:
    """The text of ``summary.md``."""
    lines = [f"# {title}", "", f"Reference: {analysis.overview.reference}.", "", RULES, ""]
    lines += [f"- Note: {note}" for note in analysis.notes]
    for part in parts:
        lines += ["", f"## {part.title}", "", part.text, ""]
        lines.append(grid_markdown(part.header, part.cells))
        if part.table_file:
            lines += ["", f"Table: [`{part.table_file}`]({part.table_file})"]
    lines += ["", "## Figures", ""]
    lines += [f"- [{f.title}]({f.files[0]}): {f.caption}" for f in figures]
    lines += [
        "",
        "Per material values: [`pairs.parquet`](pairs.parquet), "
        "[`reference.parquet`](reference.parquet).",
    ]
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #eee; } td:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; } nav a { margin-right: 1em; }
.scroll { overflow-x: auto; } .note { color: #8a4b00; } .rules { font-size: 0.9em; color: #444; }
"""


def index_html(
    analysis: Analysis, parts: Sequence[Section], figures: Sequence[Figure], title: str
) -> str:
    """The text of ``index.html``: every section's table and every figure."""
    esc = html.escape
    nav = " ".join(f'<a href="#{p.anchor}">{esc(p.title)}</a>' for p in parts)
    nav += ' <a href="#figures">Figures</a> <a href="summary.md">summary.md</a>'
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p>Reference: {esc(analysis.overview.reference)}.</p>",
        f'<p class="rules">{esc(RULES)}</p>',
    ]
    body += [f'<p class="note">Note: {esc(note)}</p>' for note in analysis.notes]
    body.append(f"<nav>{nav}</nav>")
    for part in parts:
        body += [
            f'<h2 id="{esc(part.anchor)}">{esc(part.title)}</h2>',
            f"<p>{esc(part.text)}</p>",
            f'<div class="scroll">{grid_html(part.header, part.cells)}</div>',
        ]
        if part.table_file:
            body.append(
                f'<p>Table: <a href="{esc(part.table_file)}">{esc(part.table_file)}</a></p>'
            )
    body.append('<h2 id="figures">Figures</h2>')
    for figure in figures:
        png, svg = figure.files
        body.append(
            f'<figure id="fig-{esc(figure.stem)}"><h3>{esc(figure.title)}</h3>'
            f'<a href="{esc(svg)}"><img src="{esc(png)}" alt="{esc(figure.title)}"></a>'
            f'<figcaption>{esc(figure.caption)} (<a href="{esc(svg)}">SVG</a>)</figcaption>'
            "</figure>"
        )
    body.append(
        '<p>Per material values: <a href="pairs.parquet">pairs.parquet</a>, '
        '<a href="reference.parquet">reference.parquet</a>.</p>'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
