"""``umlip report``: a run's results against DFT, as tables, figures and pages.

Files written under the report directory::

    overview.parquet             how results and reference overlap (one row)
    reference.parquet            DFT values per material (materials in the results)
    metrics.parquet              errors per model and property
    pairs.parquet                per material, model and property: model vs DFT value
    stability.parquet            Born-stability confusion matrix and scores per model
    stability_agreement.parquet  stability agreement per pair of models (and DFT)
    cost.parquet                 status counts and time per material per model
    summary.md, index.html       the tables (and, in the page, the figures)
    figures/*.png, figures/*.svg
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from umlip_orchestrator.report.analysis import (
    AgreementRow,
    Analysis,
    CostRow,
    Overview,
    PairRow,
    PropertyMetrics,
    StabilityRow,
    analyse,
    read_results,
)
from umlip_orchestrator.report.errors import ReportError
from umlip_orchestrator.report.figures import draw_all
from umlip_orchestrator.report.io import provenance_lines, run_services, write_parquet
from umlip_orchestrator.report.page import index_html, sections, summary_markdown
from umlip_orchestrator.report.reference import (
    ReferenceRow,
    ReferenceSet,
    load_reference,
    merge_references,
    reference_from_results,
    structures_from_manifest,
)
from umlip_orchestrator.report.spec import epsilons

#: Every Parquet table of a report: file name -> row dataclass.
REPORT_TABLES: dict[str, type] = {
    "overview.parquet": Overview,
    "reference.parquet": ReferenceRow,
    "metrics.parquet": PropertyMetrics,
    "pairs.parquet": PairRow,
    "stability.parquet": StabilityRow,
    "stability_agreement.parquet": AgreementRow,
    "cost.parquet": CostRow,
}


@dataclass(frozen=True)
class ReportFiles:
    """What a report wrote (paths under ``out_dir``)."""

    out_dir: Path
    tables: tuple[Path, ...]
    figures: tuple[Path, ...]
    summary: Path
    index: Path


def load_references(paths: Sequence[Path]) -> ReferenceSet:
    """One reference from one or more dataset files (earlier files win per material).

    Raises:
        ReportError: A file is missing or unreadable, or has no reference values.
    """
    if not paths:
        raise ValueError("no reference paths given")
    return merge_references([load_reference(Path(p)) for p in paths])


def default_reference(rows: Sequence[Mapping[str, Any]], results_dir: Path) -> ReferenceSet:
    """The K and G stored in the results rows; structures from the run's dataset(s).

    Raises:
        ReportError: No results row carries a reference K and G.
    """
    if not any(
        r.get("reference_k_vrh_gpa") is not None and r.get("reference_g_vrh_gpa") is not None
        for r in rows
    ):
        raise ReportError(
            f"the results in {results_dir} carry no reference K and G; pass --reference"
        )
    ids = {str(r["material_id"]) for r in rows}
    structures, notes = structures_from_manifest(results_dir, ids)
    if ids - structures.keys() and not notes:
        notes.append(
            f"{len(ids - structures.keys())} materials not found in the run's dataset: "
            "no DFT Debye temperature for them"
        )
    return reference_from_results(rows, structures, notes)


def write_report(analysis: Analysis, out_dir: Path, title: str) -> ReportFiles:
    """Writes every table, figure and page of an analysis under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    content = {
        "overview.parquet": (analysis.overview,),
        "reference.parquet": analysis.reference,
        "metrics.parquet": analysis.metrics,
        "pairs.parquet": analysis.pairs,
        "stability.parquet": analysis.stability,
        "stability_agreement.parquet": analysis.agreement,
        "cost.parquet": analysis.cost,
    }
    tables = tuple(
        write_parquet(out_dir / name, content[name], row_type)
        for name, row_type in REPORT_TABLES.items()
    )
    figures = draw_all(analysis, out_dir)
    parts = sections(analysis)
    summary = out_dir / "summary.md"
    summary.write_text(summary_markdown(analysis, parts, figures, title), encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(index_html(analysis, parts, figures, title), encoding="utf-8")
    return ReportFiles(
        out_dir=out_dir,
        tables=tables,
        figures=tuple(out_dir / f for figure in figures for f in figure.files),
        summary=summary,
        index=index,
    )


def build_report(
    results_dir: Path,
    out_dir: Path,
    reference_paths: Sequence[Path] = (),
    epsilon: Mapping[str, float] | None = None,
) -> tuple[Analysis, ReportFiles]:
    """Reads a run, compares it with DFT and writes the report.

    Args:
        results_dir: A run's output directory (holding ``results.parquet``).
        out_dir: Where the report goes (created).
        reference_paths: Reference datasets; none: the K and G stored in the results.
        epsilon: Zero-reference thresholds per property key, overriding the defaults.

    Raises:
        ReportError: Missing or unreadable results or reference.
    """
    epsilons(epsilon)  # a bad threshold fails before anything is read
    rows = read_results(results_dir)
    if reference_paths:
        reference = load_references(reference_paths)
    else:
        reference = default_reference(rows, Path(results_dir))
    analysis = analyse(rows, reference, epsilon)
    finetuned = provenance_lines(run_services(Path(results_dir)), analysis.models)
    analysis = dataclasses.replace(analysis, notes=(*analysis.notes, *finetuned))
    title = f"umlip report: {Path(results_dir).resolve().name} vs DFT"
    return analysis, write_report(analysis, out_dir, title)
