"""The published figures of the study we reproduce, next to ours (``--study``).

The study (Gao & Wang 2025, arXiv 2510.22999) prints, per model: mean values, Pearson R
and median relative errors per property, an 8-property average MAPE, Born-stability
accuracy and seconds per structure; and, for fine-tuning, Tables I and II. A copy of its
figures (``data/study-gao-wang-2025.json``, only what its text states) ships with the
package. Each published number is put next to ours for the same model and property,
with the checkpoint we used (the study names none) and how the two definitions differ.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from umlip_orchestrator.report.analysis import Analysis
from umlip_orchestrator.report.errors import ReportError
from umlip_orchestrator.report.provenance import Provenance
from umlip_orchestrator.report.spec import PROPERTIES, PROPERTY_BY_KEY

NAN = math.nan
#: The study's model names -> ours (GetModelInfo's model_name of the base models).
STUDY_MODELS = {
    "CHGNet": "chgnet",
    "MACE": "mace",
    "MatterSim": "mattersim",
    "SevenNet": "sevennet",
}
#: The study's property names -> our property keys (report/spec.py).
STUDY_PROPERTIES = {
    "K_VRH": "k_vrh",
    "G_VRH": "g_vrh",
    "E": "youngs_modulus",
    "nu": "poisson_ratio",
    "K_over_G": "pugh_ratio",
    "A_U": "universal_anisotropy",
    "cauchy_pressure": "cauchy_pressure",
    "debye_temperature": "debye_temperature",
}
#: How each compared quantity is defined here and, as far as its text says, there.
DEFINITIONS = {
    "mean": "Mean of the values over the compared materials. Ours: the DFT-stable "
    "materials of this run with a finite value from both the model and DFT; the study: "
    "its 10,994 elastically stable Materials Project materials.",
    "Pearson R": "Pearson correlation of model and DFT values over the same pairs.",
    "median relative error (%)": "Median of 100 (model - DFT) / |DFT| (signed). Ours "
    "leaves out |DFT| < epsilon (docs/report.md); the study states no such rule.",
    "average MAPE, 8 properties (%)": "Plain mean of the 8 per-property MAPEs, as the "
    "study defines it. It is dominated by A_U and C12-C44, whose DFT values lie near zero; "
    "ours leaves |DFT| < epsilon out of each MAPE, the study states no such rule.",
    "Born-stability accuracy (%)": "Share of materials whose Born-stability call (all "
    "eigenvalues of the 6x6 tensor positive) agrees with DFT's, over the materials with a "
    "DFT tensor (DFT-unstable ones included).",
    "seconds per structure": "The study: seconds per structure on its hardware (not "
    "stated). Ours: seconds per material (its relaxation and deformed cells) on this "
    "run's hardware; not comparable across machines.",
}


@dataclass(frozen=True, kw_only=True)
class StudyRow:
    """One published number next to ours.

    Attributes:
        quantity: What is compared (a key of :data:`DEFINITIONS`).
        study_model: The study's model name ("DFT" for the reference means).
        property: Our property label ("" for per-model quantities).
        published: The study's value.
        ours: Our value (NaN when this run has none).
        our_model: Our model name ("" for DFT, "(not in this run)" when absent).
        our_checkpoint: The checkpoint behind our value, from the run's manifest.
        n_ours: Pairs (or materials) behind our value.
    """

    quantity: str
    study_model: str
    property: str
    published: float
    ours: float
    our_model: str
    our_checkpoint: str
    n_ours: int


def default_study_path() -> Path:
    """The copy of the study's figures shipped with the package."""
    return Path(
        str(resources.files("umlip_orchestrator.report") / "data" / "study-gao-wang-2025.json")
    )


def load_study(path: Path | None = None) -> dict[str, Any]:
    """The study's figures (the shipped copy when ``path`` is None).

    Raises:
        ReportError: missing, unreadable or not the study's format.
    """
    path = Path(path) if path is not None else default_study_path()
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReportError(f"--study: cannot read {path}: {error}") from None
    needed = ("source", "mean_values", "pearson_r", "median_relative_error_pct")
    if not isinstance(study, dict) or any(key not in study for key in needed):
        raise ReportError(f"--study: {path} is not a study file (needs keys {', '.join(needed)})")
    return study


def _numbers(block: Any) -> dict[str, float]:
    """A {name: number} block without its notes."""
    if not isinstance(block, Mapping):
        return {}
    return {k: float(v) for k, v in block.items() if isinstance(v, int | float)}


def study_rows(
    study: Mapping[str, Any], analysis: Analysis, provenance: Provenance
) -> list[StudyRow]:
    """Every published number of ``study`` that this run can be compared with."""
    metrics = {(m.model, m.property): m for m in analysis.metrics}
    stability = {s.model: s for s in analysis.stability}
    cost = {c.model: c for c in analysis.cost}
    rows: list[StudyRow] = []

    def ours_of(study_model: str) -> str:
        ours = STUDY_MODELS.get(study_model, study_model.lower())
        return ours if ours in analysis.models else ""

    def add(
        quantity: str, study_model: str, prop: str, published: float, ours: float, n: int
    ) -> None:
        model = ours_of(study_model) if study_model != "DFT" else ""
        absent = study_model != "DFT" and not model
        rows.append(
            StudyRow(
                quantity=quantity,
                study_model=study_model,
                property=PROPERTY_BY_KEY[prop].label if prop else "",
                published=published,
                ours=NAN if absent else ours,
                our_model="(not in this run)" if absent else model,
                our_checkpoint=provenance.checkpoint_label(model) if model else "",
                n_ours=0 if absent else n,
            )
        )

    def metric(model: str, prop: str) -> Any:
        return metrics.get((ours_of(model), prop))

    means = study.get("mean_values", {})
    for name, key in STUDY_PROPERTIES.items():  # DFT means: over the reference's used rows
        if name in _numbers(means.get("DFT")):
            values = [
                getattr(r, PROPERTY_BY_KEY[key].column)
                for r in analysis.reference
                if r.included and math.isfinite(getattr(r, PROPERTY_BY_KEY[key].column))
            ]
            mean = sum(values) / len(values) if values else NAN
            add("mean", "DFT", key, _numbers(means["DFT"])[name], mean, len(values))
    for block, quantity, field in (
        (means, "mean", "mean_model"),
        (study.get("pearson_r", {}), "Pearson R", "pearson_r"),
        (study.get("median_relative_error_pct", {}), "median relative error (%)", "rel_median_pct"),
    ):
        for study_model in STUDY_MODELS:
            for name, published in _numbers(block.get(study_model)).items():
                key = STUDY_PROPERTIES.get(name)
                if key is None:
                    continue
                found = metric(study_model, key)
                value = getattr(found, field) if found else NAN
                n = (found.n_mape if field == "rel_median_pct" else found.n) if found else 0
                add(quantity, study_model, key, published, value, n)
    for study_model, published in _numbers(study.get("average_mape_pct_8_properties")).items():
        found = [metric(study_model, p.key) for p in PROPERTIES]
        mapes = [m.mape_pct for m in found if m is not None and math.isfinite(m.mape_pct)]
        average = sum(mapes) / len(mapes) if len(mapes) == len(PROPERTIES) else NAN
        add("average MAPE, 8 properties (%)", study_model, "", published, average, len(mapes))
    for study_model, published in _numbers(study.get("born_stability_accuracy_pct")).items():
        row = stability.get(ours_of(study_model))
        accuracy = 100.0 * row.accuracy if row is not None else NAN
        add(
            "Born-stability accuracy (%)", study_model, "", published, accuracy, row.n if row else 0
        )
    for study_model, timing in (study.get("seconds_per_structure") or {}).items():
        if isinstance(timing, Mapping) and isinstance(timing.get("mean"), int | float):
            row = cost.get(ours_of(study_model))
            seconds = row.seconds_per_material_mean_s if row is not None else NAN
            add("seconds per structure", study_model, "", float(timing["mean"]), seconds,
                row.n_ok if row else 0)  # fmt: skip
    return rows


def study_notes(study: Mapping[str, Any]) -> list[str]:
    """The study's own caveats to print with the comparison."""
    notes = [str(study.get("source", ""))]
    if study.get("checkpoints_note"):
        notes.append(str(study["checkpoints_note"]))
    protocol = study.get("protocol")
    if isinstance(protocol, Mapping):
        notes.append("Study protocol: " + ", ".join(f"{k} {v}" for k, v in protocol.items()) + ".")
    return [n for n in notes if n]


def published_finetuning_tables(study: Mapping[str, Any], model: str) -> list[tuple[str, str, str]]:
    """The study's Table I and Table II entries for one of our models, as
    (property, Table I relative MAPE change %, Table II IQR before -> after %) rows."""
    study_model = next((s for s, o in STUDY_MODELS.items() if o == model), None)
    finetuning = study.get("finetuning") or {}
    table_1 = finetuning.get("table_1_relative_mape_change_pct") or {}
    table_2 = finetuning.get("table_2_iqr_of_relative_error_pct_before_after") or {}
    if study_model is None or study_model not in table_1:
        return []
    iqr = dict(zip(table_2.get("properties", []), table_2.get(study_model, []), strict=False))
    rows = []
    for name, change in zip(table_1.get("properties", []), table_1[study_model], strict=False):
        key = STUDY_PROPERTIES.get(name)
        label = PROPERTY_BY_KEY[key].label if key else name
        before_after = iqr.get(name)
        rows.append(
            (
                label,
                f"{change:g}",
                f"{before_after[0]:g} -> {before_after[1]:g}" if before_after else "-",
            )
        )
    return rows


def sorted_rows(rows: Sequence[StudyRow]) -> list[StudyRow]:
    """Rows grouped by quantity, then model, then property (page order)."""
    order = {q: i for i, q in enumerate(DEFINITIONS)}
    return sorted(rows, key=lambda r: (order.get(r.quantity, 99), r.study_model, r.property))
