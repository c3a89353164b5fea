"""The human-readable report: ``summary.md`` and a self-contained ``index.html``.

Both show the same sections (tables), starting with how the numbers were made (settings,
checkpoints, package versions); the HTML page adds the figures. Parity plots are inline
SVG whose points carry a ``<title>`` (hover names the material, model and values) and
link to the material's page. The page uses only relative links and inline CSS: no
script, stylesheet or font from elsewhere, so it reads offline and from a copied
directory.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from umlip_orchestrator.report.analysis import Analysis, Overview
from umlip_orchestrator.report.figures import Figure
from umlip_orchestrator.report.io import format_value, grid_html, grid_markdown
from umlip_orchestrator.report.materials import MaterialFlags, page_href
from umlip_orchestrator.report.provenance import Provenance
from umlip_orchestrator.report.spec import PROPERTIES
from umlip_orchestrator.report.study import DEFINITIONS as STUDY_DEFINITIONS
from umlip_orchestrator.report.study import StudyRow

_METRIC_COLUMNS = (
    "model", "label", "unit", "n", "n_failed", "n_skipped", "n_no_value", "mae", "pearson_r",
    "mean_model", "mean_dft", "mape_pct", "mdape_pct", "n_small_reference", "rel_median_pct",
    "rel_mean_pct", "rel_q1_pct", "rel_q3_pct", "rel_iqr_pct",
)  # fmt: skip
_AVERAGE_COLUMNS = (
    "model", "average_mape_pct", "average_mape_without_near_zero_pct", "average_mdape_pct",
    "average_mdape_without_near_zero_pct", "n_properties", "n_properties_without_near_zero",
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
        row_links: Per row, a link for its first cell (e.g. a material page), if any.
    """

    anchor: str
    title: str
    text: str
    header: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]
    table_file: str | None = None
    row_links: tuple[str, ...] = ()


def _rows(rows: Sequence[object], columns: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(format_value(getattr(r, c)) for c in columns) for r in rows)


def sections(analysis: Analysis) -> list[Section]:
    """The report's sections, in page order."""
    overview = [
        (f.name, format_value(getattr(analysis.overview, f.name))) for f in fields(Overview)
    ]
    by_key = {(m.model, m.property): m for m in analysis.metrics}

    def per_property(field: str) -> tuple[tuple[str, ...], ...]:
        """One row per model: its ``field`` of every property's metrics."""
        return tuple(
            (model, *(format_value(getattr(by_key[(model, p.key)], field)) for p in PROPERTIES))
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
            "Mean absolute percentage error per model and property (|DFT| < epsilon left "
            "out). A_U and C12-C44 have DFT values near zero, so their MAPE is large and "
            "dominates the 8-property average; read MdAPE and the average without them too.",
            ("model", *(p.label for p in PROPERTIES)),
            per_property("mape_pct"),
            "metrics.parquet",
        ),
        Section(
            "mdape",
            "MdAPE (%)",
            "Median absolute percentage error per model and property: the robust "
            "counterpart of MAPE (a few materials with near-zero DFT values cannot move it).",
            ("model", *(p.label for p in PROPERTIES)),
            per_property("mdape_pct"),
            "metrics.parquet",
        ),
        Section(
            "averages",
            "Errors averaged over the properties (%)",
            "Plain means of the per-property values above. The study (Gao & Wang 2025) "
            "reports the average MAPE over its 8 properties; the average without A_U and "
            "C12-C44 shows how much those two, whose DFT values lie near zero, weigh in it.",
            _AVERAGE_COLUMNS,
            _rows(analysis.averages, _AVERAGE_COLUMNS),
            "averages.parquet",
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


def provenance_sections(provenance: Provenance) -> list[Section]:
    """How the numbers were made: dataset, workflow settings, timing; models."""
    models = provenance.model_rows()
    return [
        Section(
            "provenance",
            "Settings and provenance",
            f"From the run's manifest ({provenance.source}): the dataset, the workflow "
            "settings of every run into the folder (a resumed run adds one; values that "
            "differ between runs are shown as 'a | b'), and the wall time.",
            ("setting", "value"),
            tuple(provenance.setting_rows()),
        ),
        Section(
            "models",
            "Models and checkpoints",
            "Each model's service as the run recorded it (GetModelInfo): checkpoint and "
            "its sha256, package versions, device and precision.",
            ("model", "checkpoint", "sha256", "version", "device", "dtype", "packages",
             "fine-tuned from"),
            tuple(
                (m.model, m.checkpoint_name, m.checkpoint_sha256, m.model_version, m.device,
                 m.dtype, m.package_versions, m.fine_tuned_from or "-")
                for m in models
            ),
        ),
    ]  # fmt: skip


def definitions_section(definitions: Mapping[str, str]) -> Section:
    """The definitions of the measures on the page."""
    return Section(
        "definitions",
        "Definitions",
        "How each measure on this page is computed (docs/report.md has the rules).",
        ("measure", "definition"),
        tuple((name, text) for name, text in definitions.items()),
    )


def flagged_section(flags: Sequence[MaterialFlags], threshold_pct: float) -> Section:
    """Materials whose tensor is Born-unstable (model or DFT) or depends on the strain."""
    flagged = [f for f in flags if f.any]
    rows, links = [], []
    for flag in flagged:
        rows.append((flag.material_id, flag.formula, "; ".join(flag.marks())))
        links.append(page_href(flag.material_id))
    return Section(
        "flagged",
        f"Materials to look at ({len(flagged)} of {len(flags)})",
        "Materials with a tensor that is not Born-stable (the model's or DFT's; their "
        "moduli are not physical), or whose tensor from the smallest strains differs from "
        f"the one from all strains by more than {threshold_pct:g} % in some column "
        "(max_strain_dependence_pct; the standard strain set then probes a non-linear "
        "response). Each links to the material's page: tensors next to DFT's, fit "
        "residuals and stress-strain points.",
        ("material", "formula", "flags"),
        tuple(rows),
        row_links=tuple(links),
    )


def study_section(rows: Sequence[StudyRow], notes: Sequence[str]) -> Section:
    """Each published number of the study next to ours."""
    return Section(
        "study",
        "The study side by side",
        "Published values of Gao & Wang 2025 next to ours for the same model and property, "
        "with the checkpoint we used. " + " ".join(notes) + " Definitions: "
        + " ".join(f"{name}: {text}" for name, text in STUDY_DEFINITIONS.items()),
        ("quantity", "study model", "property", "published", "ours", "our model",
         "our checkpoint", "n (ours)"),
        tuple(
            (r.quantity, r.study_model, r.property or "-", format_value(r.published),
             format_value(r.ours), r.our_model or "-", r.our_checkpoint or "-", str(r.n_ours))
            for r in rows
        ),
        "study.parquet",
    )  # fmt: skip


def _linked_markdown(part: Section) -> list[tuple[str, ...]]:
    if not part.row_links:
        return list(part.cells)
    return [
        (f"[{row[0]}]({link})", *row[1:]) if link else row
        for row, link in zip(part.cells, part.row_links, strict=True)
    ]


def summary_markdown(
    analysis: Analysis,
    parts: Sequence[Section],
    figures: Sequence[Figure],
    title: str,
    warnings: Sequence[str] = (),
) -> str:
    """The text of ``summary.md``."""
    lines = [f"# {title}", ""]
    lines += [f"> **Warning:** {warning}" for warning in warnings]
    lines += ["", f"Reference: {analysis.overview.reference}.", "", RULES, ""]
    lines += [f"- Note: {note}" for note in analysis.notes]
    for part in parts:
        lines += ["", f"## {part.title}", "", part.text, ""]
        lines.append(grid_markdown(part.header, _linked_markdown(part)))
        if part.table_file:
            lines += ["", f"Table: [`{part.table_file}`]({part.table_file})"]
    lines += ["", "## Figures", ""]
    lines += [f"- [{f.title}]({f.files[0]}): {f.caption}" for f in figures]
    lines += [
        "",
        "Per material values: [`pairs.parquet`](pairs.parquet), "
        "[`reference.parquet`](reference.parquet); one page per material: "
        "[`materials/index.html`](materials/index.html).",
    ]
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #eee; } td:first-child { text-align: left; }
figure { margin: 1em 0; }
figure img, figure svg { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; } nav a { margin-right: 1em; }
.scroll { overflow-x: auto; } .note { color: #8a4b00; } .rules { font-size: 0.9em; color: #444; }
.warning { background: #fde8e8; border: 2px solid #b00; padding: 0.5em 1em; font-weight: bold; }
td.wrap { white-space: normal; text-align: left; max-width: 60em; }
"""

_LINK = re.compile(r'<a xlink:href="([^"]+)">')


def svg_with_titles(svg: str, titles: Mapping[str, str]) -> str:
    """An SVG document made inline: prolog dropped, and a ``<title>`` (the browser's
    hover text) added to every ``<a xlink:href=...>`` whose link ``titles`` knows."""
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg

    def titled(match: re.Match[str]) -> str:
        title = titles.get(html.unescape(match.group(1)))
        if title is None:
            return match.group(0)
        return f"{match.group(0)}<title>{html.escape(title)}</title>"

    return _LINK.sub(titled, svg)


def _html_grid(part: Section) -> str:
    if not part.row_links:
        return grid_html(part.header, part.cells)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in part.header)
    rows = []
    for row, link in zip(part.cells, part.row_links, strict=True):
        first = f'<a href="{esc(link)}">{esc(row[0])}</a>' if link else esc(row[0])
        rest = "".join(f"<td>{esc(c)}</td>" for c in row[1:])
        rows.append(f"<tr><td>{first}</td>{rest}</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{len(part.header)}">(none)</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def index_html(
    analysis: Analysis,
    parts: Sequence[Section],
    figures: Sequence[Figure],
    title: str,
    warnings: Sequence[str] = (),
    inline_svgs: Mapping[str, str] | None = None,
) -> str:
    """The text of ``index.html``: every section's table and every figure.

    Args:
        warnings: Shown at the top, before anything else (e.g. pooled settings).
        inline_svgs: Figure stem -> SVG text to show inline instead of its PNG.
    """
    esc = html.escape
    inline_svgs = inline_svgs or {}
    nav = " ".join(f'<a href="#{p.anchor}">{esc(p.title)}</a>' for p in parts)
    nav += (
        ' <a href="#figures">Figures</a> <a href="materials/index.html">Materials</a>'
        ' <a href="summary.md">summary.md</a>'
    )
    body = [f"<h1>{esc(title)}</h1>"]
    body += [f'<p class="warning" id="warning">Warning: {esc(w)}</p>' for w in warnings]
    body += [
        f"<p>Reference: {esc(analysis.overview.reference)}.</p>",
        f'<p class="rules">{esc(RULES)}</p>',
    ]
    body += [f'<p class="note">Note: {esc(note)}</p>' for note in analysis.notes]
    body.append(f"<nav>{nav}</nav>")
    for part in parts:
        body += [
            f'<h2 id="{esc(part.anchor)}">{esc(part.title)}</h2>',
            f"<p>{esc(part.text)}</p>",
            f'<div class="scroll" id="table-{esc(part.anchor)}">{_html_grid(part)}</div>',
        ]
        if part.table_file:
            body.append(
                f'<p>Table: <a href="{esc(part.table_file)}">{esc(part.table_file)}</a></p>'
            )
    body.append('<h2 id="figures">Figures</h2>')
    for figure in figures:
        png, svg = figure.files
        shown = inline_svgs.get(figure.stem)
        if shown is None:
            shown = f'<a href="{esc(svg)}"><img src="{esc(png)}" alt="{esc(figure.title)}"></a>'
        body.append(
            f'<figure id="fig-{esc(figure.stem)}"><h3>{esc(figure.title)}</h3>{shown}'
            f'<figcaption>{esc(figure.caption)} (<a href="{esc(svg)}">SVG</a>, '
            f'<a href="{esc(png)}">PNG</a>)</figcaption></figure>'
        )
    body.append(
        '<p>Per material values: <a href="pairs.parquet">pairs.parquet</a>, '
        '<a href="reference.parquet">reference.parquet</a>; one page per material: '
        '<a href="materials/index.html">materials</a>.</p>'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
