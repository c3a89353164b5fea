"""``umlip report``: a run's results against DFT, as tables, figures and pages.

Files written under the report directory::

    overview.parquet             how results and reference overlap (one row)
    reference.parquet            DFT values per material (materials in the results)
    metrics.parquet              errors per model and property
    pairs.parquet                per material, model and property: model vs DFT value
    stability.parquet            Born-stability confusion matrix and scores per model
    stability_agreement.parquet  stability agreement per pair of models (and DFT)
    cost.parquet                 status counts and time per material per model
    averages.parquet             per model: MAPE and MdAPE averaged over properties
    study.parquet                the study's published numbers next to ours (--study)
    summary.md, index.html       settings and checkpoints, the tables (and, in the
                                 page, the figures; parity points hover and link)
    materials/<id>.html          per material: tensors vs DFT, fit, stress-strain
    figures/*.png, figures/*.svg
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from umlip_orchestrator.elastic import STRAIN_DEPENDENCE_FLAG_PCT
from umlip_orchestrator.report.analysis import (
    AgreementRow,
    Analysis,
    AverageErrorRow,
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
from umlip_orchestrator.report.io import (
    format_value,
    provenance_lines,
    run_services,
    write_parquet,
)
from umlip_orchestrator.report.materials import page_href, write_material_pages
from umlip_orchestrator.report.metrics import DEFINITIONS as METRIC_DEFINITIONS
from umlip_orchestrator.report.page import (
    definitions_section,
    flagged_section,
    index_html,
    provenance_sections,
    sections,
    study_section,
    summary_markdown,
    svg_with_titles,
)
from umlip_orchestrator.report.provenance import Provenance, read_provenance, refuse_mixed
from umlip_orchestrator.report.reference import (
    ReferenceRow,
    ReferenceSet,
    load_reference,
    merge_references,
    reference_from_results,
    structures_from_manifest,
)
from umlip_orchestrator.report.spec import PROPERTIES, epsilons
from umlip_orchestrator.report.study import (
    StudyRow,
    load_study,
    sorted_rows,
    study_notes,
    study_rows,
)

#: Every Parquet table of a report: file name -> row dataclass.
REPORT_TABLES: dict[str, type] = {
    "overview.parquet": Overview,
    "reference.parquet": ReferenceRow,
    "metrics.parquet": PropertyMetrics,
    "pairs.parquet": PairRow,
    "stability.parquet": StabilityRow,
    "stability_agreement.parquet": AgreementRow,
    "cost.parquet": CostRow,
    "averages.parquet": AverageErrorRow,
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


def write_report(
    analysis: Analysis,
    out_dir: Path,
    title: str,
    *,
    provenance: Provenance | None = None,
    results_dir: Path | None = None,
    reference: ReferenceSet | None = None,
    study: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
) -> ReportFiles:
    """Writes every table, figure and page of an analysis under ``out_dir``.

    Args:
        provenance: The run's settings and checkpoints (shown first); None: not shown.
        results_dir, reference: The run and its reference, for one page per material
            (``materials/``); None: no material pages.
        study: The study's published figures (:func:`~.study.load_study`), to put next
            to ours; None: no such section.
        warnings: Shown at the top of both pages.
    """
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
        "averages.parquet": analysis.averages,
    }
    tables = [
        write_parquet(out_dir / name, content[name], row_type)
        for name, row_type in REPORT_TABLES.items()
    ]
    figures = draw_all(analysis, out_dir)
    parts = provenance_sections(provenance) if provenance is not None else []
    parts += sections(analysis)
    parts.append(definitions_section(METRIC_DEFINITIONS))
    if results_dir is not None and reference is not None:
        flags = write_material_pages(results_dir, analysis, reference, out_dir)
        parts.append(flagged_section(flags, STRAIN_DEPENDENCE_FLAG_PCT))
    if study is not None:
        rows = sorted_rows(study_rows(study, analysis, provenance or Provenance(runs=())))
        tables.append(write_parquet(out_dir / "study.parquet", rows, StudyRow))
        parts.append(study_section(rows, study_notes(study)))
    summary = out_dir / "summary.md"
    summary.write_text(
        summary_markdown(analysis, parts, figures, title, warnings), encoding="utf-8"
    )
    index = out_dir / "index.html"
    inline = {
        figure.stem: svg_with_titles(
            (out_dir / figure.files[1]).read_text(encoding="utf-8"), hover_titles(analysis)
        )
        for figure in figures
        if figure.stem.startswith("parity_")
    }
    index.write_text(
        index_html(analysis, parts, figures, title, warnings, inline), encoding="utf-8"
    )
    return ReportFiles(
        out_dir=out_dir,
        tables=tuple(tables),
        figures=tuple(out_dir / f for figure in figures for f in figure.files),
        summary=summary,
        index=index,
    )


def hover_titles(analysis: Analysis) -> dict[str, str]:
    """Hover text per parity-plot point link (``materials/<id>.html#model-<model>``)."""
    formulas = {r.material_id: r.formula for r in analysis.reference}
    specs = {p.key: p for p in PROPERTIES}
    by_link: dict[str, list[str]] = {}
    for pair in analysis.pairs:
        spec = specs[pair.property]
        unit = f" {spec.unit}" if spec.unit else ""
        text = (
            f"{spec.label}: {format_value(pair.predicted)} vs DFT "
            f"{format_value(pair.reference)}{unit}"
        )
        link = f"{page_href(pair.material_id)}#model-{pair.model}"
        header = f"{pair.material_id} ({formulas.get(pair.material_id, '?')}), {pair.model}"
        by_link.setdefault(link, [header]).append(text)
        by_link.setdefault(page_href(pair.material_id), [pair.material_id]).append(
            f"{pair.model} {text}"
        )
    return {link: "; ".join(parts) for link, parts in by_link.items()}


def build_report(
    results_dir: Path,
    out_dir: Path,
    reference_paths: Sequence[Path] = (),
    epsilon: Mapping[str, float] | None = None,
    *,
    study_path: Path | None = None,
    with_study: bool = False,
    allow_mixed_settings: bool = False,
) -> tuple[Analysis, ReportFiles]:
    """Reads a run, compares it with DFT and writes the report.

    Args:
        results_dir: A run's output directory (holding ``results.parquet``).
        out_dir: Where the report goes (created).
        reference_paths: Reference datasets; none: the K and G stored in the results.
        epsilon: Zero-reference thresholds per property key, overriding the defaults.
        study_path, with_study: Put the study's published figures next to ours, from
            ``study_path`` or (None) the copy shipped with the package.
        allow_mixed_settings: Report runs with different settings together (with a
            warning at the top) instead of refusing.

    Raises:
        ReportError: Missing or unreadable results or reference; runs with different
            settings pooled in the folder (unless allowed); an unreadable study file.
    """
    epsilons(epsilon)  # a bad threshold fails before anything is read
    provenance = read_provenance(Path(results_dir))
    if not allow_mixed_settings:
        refuse_mixed(provenance)
    study = load_study(study_path) if with_study or study_path is not None else None
    rows = read_results(results_dir)
    if reference_paths:
        reference = load_references(reference_paths)
    else:
        reference = default_reference(rows, Path(results_dir))
    analysis = analyse(rows, reference, epsilon)
    finetuned = provenance_lines(run_services(Path(results_dir)), analysis.models)
    analysis = dataclasses.replace(analysis, notes=(*analysis.notes, *finetuned))
    warnings = [
        f"this report pools {len(provenance.runs)} runs whose settings differ: "
        + "; ".join(f"{key}: {' vs '.join(values)}" for key, values in provenance.differing.items())
        + ". Rows computed with different settings are averaged together below."
    ] if provenance.mixed else []  # fmt: skip
    title = f"umlip report: {Path(results_dir).resolve().name} vs DFT ({provenance.summary_line()})"
    files = write_report(
        analysis,
        out_dir,
        title,
        provenance=provenance,
        results_dir=Path(results_dir),
        reference=reference,
        study=study,
        warnings=warnings,
    )
    return analysis, files
