"""A results table joined with a DFT reference: every table of a report, as rows.

Scope: a (material, model) results row counts for a property when the material is in
the reference, passes the DFT-stability filter, and has a finite reference value of
that property. Each such row is then exactly one of: a pair (status ok, finite
prediction), ``n_no_value`` (ok but the prediction is missing or not finite),
``n_failed`` or ``n_skipped`` (by its status). Stability is scored over the materials
whose reference has a stability call (a DFT tensor), DFT-unstable ones included: they
are what the stability call is about, while the property errors use only stable ones.

Per model, :class:`AverageErrorRow` averages the per-property MAPE (all properties, and
without the two whose DFT values lie near zero: :data:`NEAR_ZERO_PROPERTIES`) and MdAPE.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from umlip_orchestrator.report.errors import ReportError
from umlip_orchestrator.report.metrics import (
    agreement,
    average_over_properties,
    confusion,
    error_stats,
    mean_std,
    relative_errors_pct,
)
from umlip_orchestrator.report.reference import ReferenceRow, ReferenceSet
from umlip_orchestrator.report.spec import PROPERTIES, epsilons

NAN = math.nan
_BASE_COLUMNS = ("material_id", "model", "formula", "status")
_COST_COLUMNS = ("seconds_per_material", "wall_time_s")
_OTHER_COLUMNS = ("born_stable", "reference_k_vrh_gpa", "reference_g_vrh_gpa")
#: Name of the reference in the stability-agreement matrix.
DFT = "DFT"
#: Properties whose DFT values lie near zero for many materials (A_U, Cauchy pressure):
#: their MAPEs are huge and dominate an average over properties.
NEAR_ZERO_PROPERTIES: tuple[str, ...] = ("universal_anisotropy", "cauchy_pressure")


@dataclass(frozen=True, kw_only=True)
class Overview:
    """How the results and the reference overlap (one row)."""

    reference: str
    n_reference_materials: int
    n_reference_problems: int
    n_result_materials: int
    n_models: int
    n_in_both: int
    n_dft_unstable_removed: int
    n_no_reference_values: int
    n_results_without_reference: int
    n_used: int


@dataclass(frozen=True, kw_only=True)
class PropertyMetrics:
    """Errors of one model on one property against DFT (one row per model and property).

    The statistics are those of :class:`~umlip_orchestrator.report.metrics.ErrorStats`
    (MAE and means in ``unit``); ``n_rows = n + n_no_value + n_failed + n_skipped``.
    """

    model: str
    property: str
    label: str
    unit: str
    n_rows: int
    n: int
    n_failed: int
    n_skipped: int
    n_no_value: int
    mae: float
    pearson_r: float
    mean_model: float
    mean_dft: float
    epsilon: float
    n_mape: int
    n_small_reference: int
    mape_pct: float
    mdape_pct: float
    rel_median_pct: float
    rel_mean_pct: float
    rel_q1_pct: float
    rel_q3_pct: float
    rel_iqr_pct: float


@dataclass(frozen=True, kw_only=True)
class PairRow:
    """One material, model and property: the prediction next to the DFT value.

    ``model_born_stable``: the model's Born-stability call for the material (None when
    the row has none, e.g. failed); ``dft_born_stable``: the DFT tensor's (None without
    a DFT tensor; never False here, since DFT-unstable materials are out of scope).
    """

    material_id: str
    model: str
    property: str
    status: str
    predicted: float
    reference: float
    abs_error: float
    relative_error_pct: float
    model_born_stable: bool | None = None
    dft_born_stable: bool | None = None


@dataclass(frozen=True, kw_only=True)
class AverageErrorRow:
    """One model's errors averaged over the properties (plain means of the finite ones).

    ``average_mape_pct``: mean of the per-property MAPEs (the study's "average MAPE" of
    8 properties); ``average_mape_without_near_zero_pct``: the same without A_U and the
    Cauchy pressure; ``average_mdape_pct`` and ``average_mdape_without_near_zero_pct``:
    the same means of the per-property MdAPEs. ``n_properties`` and
    ``n_properties_without_near_zero``: how many properties had a MAPE in each mean.
    """

    model: str
    n_properties: int
    n_properties_without_near_zero: int
    average_mape_pct: float
    average_mape_without_near_zero_pct: float
    average_mdape_pct: float
    average_mdape_without_near_zero_pct: float


@dataclass(frozen=True, kw_only=True)
class StabilityRow:
    """A model's Born-stability calls against DFT's (positive class = stable)."""

    model: str
    n_rows: int
    n_no_call: int
    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    accuracy: float
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True, kw_only=True)
class AgreementRow:
    """Fraction of materials on which two models (or a model and DFT) agree on stability."""

    model_a: str
    model_b: str
    n: int
    n_agree: int
    agreement: float


@dataclass(frozen=True, kw_only=True)
class CostRow:
    """Status counts and cost of one model over all its rows in the results table."""

    model: str
    n_rows: int
    n_ok: int
    n_failed: int
    n_skipped: int
    seconds_per_material_mean_s: float
    seconds_per_material_std_s: float
    materials_per_second: float
    wall_time_mean_s: float


@dataclass(frozen=True)
class Analysis:
    """Every table of a report."""

    overview: Overview
    reference: tuple[ReferenceRow, ...]
    metrics: tuple[PropertyMetrics, ...]
    pairs: tuple[PairRow, ...]
    stability: tuple[StabilityRow, ...]
    agreement: tuple[AgreementRow, ...]
    cost: tuple[CostRow, ...]
    models: tuple[str, ...]
    notes: tuple[str, ...]
    averages: tuple[AverageErrorRow, ...] = ()


def read_results(results_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``RESULTS_DIR/results.parquet`` (the columns a report needs).

    Raises:
        ReportError: The directory or its ``results.parquet`` is missing or unreadable,
            or the file lacks columns of the results table.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ReportError(f"results directory {results_dir} does not exist")
    path = results_dir / "results.parquet"
    if not path.is_file():
        raise ReportError(f"{results_dir} has no results.parquet (is it a umlip run directory?)")
    columns = [*_BASE_COLUMNS, *_COST_COLUMNS, *_OTHER_COLUMNS, *(p.column for p in PROPERTIES)]
    try:
        names = set(pq.read_schema(path).names)
        if missing := [c for c in columns if c not in names]:
            raise ReportError(f"{path} is not a results table: missing columns {missing}")
        return pq.read_table(path, columns=columns).to_pylist()
    except ReportError:
        raise
    except Exception as error:  # pyarrow raises several types on corrupt files
        raise ReportError(f"unreadable {path}: {type(error).__name__}: {error}") from None


def _value(row: Mapping[str, Any], column: str) -> float:
    value = row.get(column)
    return float(value) if value is not None else NAN


def analyse(
    rows: Sequence[Mapping[str, Any]],
    reference: ReferenceSet,
    epsilon: Mapping[str, float] | None = None,
) -> Analysis:
    """Joins results rows with a reference and computes every report table.

    Args:
        rows: Results rows (see :func:`read_results`).
        reference: The DFT reference.
        epsilon: Zero-reference thresholds per property key (defaults of
            :data:`~umlip_orchestrator.report.spec.PROPERTIES` where absent).
    """
    eps = epsilons(epsilon)
    ref_by_id = reference.by_id()
    models = tuple(sorted({str(r["model"]) for r in rows}))
    result_ids = {str(r["material_id"]) for r in rows}
    in_both = [ref_by_id[m] for m in ref_by_id if m in result_ids]
    used = {r.material_id: r for r in in_both if r.included}
    by_model = {m: [r for r in rows if r["model"] == m] for m in models}

    metrics: list[PropertyMetrics] = []
    pairs: list[PairRow] = []
    for model in models:
        for prop in PROPERTIES:
            scoped = [
                r
                for r in by_model[model]
                if (ref := used.get(str(r["material_id"]))) is not None
                and math.isfinite(getattr(ref, prop.column))
            ]
            refs = [getattr(used[str(r["material_id"])], prop.column) for r in scoped]
            preds = [_value(r, prop.column) if r["status"] == "ok" else NAN for r in scoped]
            rel = relative_errors_pct(preds, refs, eps[prop.key])
            statuses = Counter(str(r["status"]) for r in scoped)
            stats = error_stats(preds, refs, eps[prop.key])
            metrics.append(
                PropertyMetrics(
                    **asdict(stats),
                    model=model,
                    property=prop.key,
                    label=prop.label,
                    unit=prop.unit,
                    epsilon=eps[prop.key],
                    n_rows=len(scoped),
                    n_failed=statuses["failed"],
                    n_skipped=statuses["skipped"],
                    n_no_value=statuses["ok"] - stats.n,
                )
            )
            pairs += [
                PairRow(
                    material_id=str(r["material_id"]),
                    model=model,
                    property=prop.key,
                    status=str(r["status"]),
                    predicted=p,
                    reference=f,
                    abs_error=abs(p - f) if math.isfinite(p) else NAN,
                    relative_error_pct=float(e),
                    model_born_stable=_call(r),
                    dft_born_stable=used[str(r["material_id"])].dft_stable,
                )
                for r, p, f, e in zip(scoped, preds, refs, rel, strict=True)
            ]

    stability, calls = _stability(by_model, ref_by_id)
    agreement_rows = [
        AgreementRow(model_a=a, model_b=b, n=n, n_agree=k, agreement=k / n if n else NAN)
        for (a, b), (n, k) in agreement(calls).items()
    ]
    n_unstable = sum(1 for r in in_both if r.source != "none" and not r.included)
    overview = Overview(
        reference=reference.name,
        n_reference_materials=len(reference.rows),
        n_reference_problems=reference.n_problems,
        n_result_materials=len(result_ids),
        n_models=len(models),
        n_in_both=len(in_both),
        n_dft_unstable_removed=n_unstable,
        n_no_reference_values=sum(1 for r in in_both if r.source == "none"),
        n_results_without_reference=len(result_ids - ref_by_id.keys()),
        n_used=len(used),
    )
    return Analysis(
        overview=overview,
        reference=tuple(in_both),
        metrics=tuple(metrics),
        pairs=tuple(pairs),
        stability=tuple(stability),
        agreement=tuple(agreement_rows),
        cost=tuple(_cost(model, by_model[model]) for model in models),
        models=models,
        notes=reference.notes,
        averages=average_errors(metrics),
    )


def average_errors(metrics: Sequence[PropertyMetrics]) -> tuple[AverageErrorRow, ...]:
    """Per model (in order of appearance), its MAPE and MdAPE averaged over properties."""
    rows = []
    for model in dict.fromkeys(m.model for m in metrics):
        own = [m for m in metrics if m.model == model]
        mape, n = average_over_properties([m.mape_pct for m in own])
        kept = [m for m in own if m.property not in NEAR_ZERO_PROPERTIES]
        mape_kept, n_kept = average_over_properties([m.mape_pct for m in kept])
        mdape, _ = average_over_properties([m.mdape_pct for m in own])
        mdape_kept, _ = average_over_properties([m.mdape_pct for m in kept])
        rows.append(
            AverageErrorRow(
                model=model,
                n_properties=n,
                n_properties_without_near_zero=n_kept,
                average_mape_pct=mape,
                average_mape_without_near_zero_pct=mape_kept,
                average_mdape_pct=mdape,
                average_mdape_without_near_zero_pct=mdape_kept,
            )
        )
    return tuple(rows)


def _call(row: Mapping[str, Any]) -> bool | None:
    """The model's stability call of an ok results row; None when it has none."""
    value = row.get("born_stable")
    return bool(value) if row["status"] == "ok" and value is not None else None


def _stability(
    by_model: Mapping[str, Sequence[Mapping[str, Any]]], ref_by_id: Mapping[str, ReferenceRow]
) -> tuple[list[StabilityRow], dict[str, dict[str, bool]]]:
    """Per-model confusion against DFT, and every stability call for the agreement matrix."""
    calls: dict[str, dict[str, bool]] = {}
    rows: list[StabilityRow] = []
    dft = {m: bool(r.dft_stable) for m, r in ref_by_id.items() if r.dft_stable is not None}
    for model, model_rows in by_model.items():
        calls[model] = {
            str(r["material_id"]): bool(r["born_stable"])
            for r in model_rows
            if r["status"] == "ok" and r["born_stable"] is not None
        }
        if not dft:
            continue
        scoped = [str(r["material_id"]) for r in model_rows if str(r["material_id"]) in dft]
        called = [m for m in scoped if m in calls[model]]
        scores = confusion([calls[model][m] for m in called], [dft[m] for m in called])
        rows.append(
            StabilityRow(
                model=model,
                n_rows=len(scoped),
                n_no_call=len(scoped) - len(called),
                **asdict(scores),
            )
        )
    if dft:
        models_ids = set().union(*(c.keys() for c in calls.values())) if calls else set()
        calls = {DFT: {m: s for m, s in dft.items() if m in models_ids}, **calls}
    return rows, calls


def _cost(model: str, rows: Sequence[Mapping[str, Any]]) -> CostRow:
    """Status counts over all rows; timing over the ok rows."""
    statuses = Counter(str(r["status"]) for r in rows)
    ok = [r for r in rows if r["status"] == "ok"]
    mean, std = mean_std([_value(r, "seconds_per_material") for r in ok])
    wall, _ = mean_std([_value(r, "wall_time_s") for r in ok])
    return CostRow(
        model=model,
        n_rows=len(rows),
        n_ok=statuses["ok"],
        n_failed=statuses["failed"],
        n_skipped=statuses["skipped"],
        seconds_per_material_mean_s=mean,
        seconds_per_material_std_s=std,
        materials_per_second=1.0 / mean if mean > 0 else NAN,
        wall_time_mean_s=wall,
    )
