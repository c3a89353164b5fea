"""Every report statistic against an independent computation on small hand-made tables.

Independent means: Python's ``statistics`` (quartiles with the "inclusive" method, which
is numpy's linear interpolation), ``scipy.stats.pearsonr`` and ``sklearn.metrics``, with
the scope rules (failed rows, NaN, |ref| < epsilon) re-applied by hand.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from umlip_orchestrator.report import ReportError
from umlip_orchestrator.report.analysis import (
    DFT,
    NEAR_ZERO_PROPERTIES,
    AverageErrorRow,
    analyse,
    average_errors,
)
from umlip_orchestrator.report.metrics import (
    DEFINITIONS,
    agreement,
    average_over_properties,
    confusion,
    error_stats,
    mean_std,
    relative_change,
    relative_errors_pct,
)
from umlip_orchestrator.report.reference import ReferenceRow, ReferenceSet
from umlip_orchestrator.report.spec import PROPERTIES, epsilons

NAN = math.nan


def expected_stats(pred: list[Any], ref: list[Any], eps: float) -> dict[str, float]:
    """The statistics of SCIENCE.md §4, computed by hand."""
    pairs = [
        (float(p), float(r))
        for p, r in zip(pred, ref, strict=True)
        if p is not None and r is not None and math.isfinite(p) and math.isfinite(r)
    ]
    n = len(pairs)
    rel = [100.0 * (p - r) / abs(r) for p, r in pairs if abs(r) >= eps and r != 0.0]
    out: dict[str, float] = {"n": n, "n_mape": len(rel), "n_small_reference": n - len(rel)}
    out["mae"] = sum(abs(p - r) for p, r in pairs) / n if n else NAN
    out["mean_model"] = statistics.fmean(p for p, _ in pairs) if n else NAN
    out["mean_dft"] = statistics.fmean(r for _, r in pairs) if n else NAN
    xs, ys = [p for p, _ in pairs], [r for _, r in pairs]
    constant = n < 2 or len(set(xs)) < 2 or len(set(ys)) < 2
    out["pearson_r"] = NAN if constant else float(pearsonr(xs, ys).statistic)
    if rel:
        out["mape_pct"] = statistics.fmean(abs(x) for x in rel)
        out["mdape_pct"] = statistics.median(abs(x) for x in rel)
        out["rel_mean_pct"] = statistics.fmean(rel)
        out["rel_median_pct"] = statistics.median(rel)
        if len(rel) >= 2:
            q1, _, q3 = statistics.quantiles(rel, n=4, method="inclusive")
        else:
            q1 = q3 = rel[0]
        out |= {"rel_q1_pct": q1, "rel_q3_pct": q3, "rel_iqr_pct": q3 - q1}
    else:
        for key in ("mape_pct", "mdape_pct", "rel_mean_pct", "rel_median_pct", "rel_q1_pct",
                    "rel_q3_pct"):  # fmt: skip
            out[key] = NAN
        out["rel_iqr_pct"] = NAN
    return out


def assert_stats(actual: object, expected: dict[str, float]) -> None:
    for key, value in expected.items():
        got = getattr(actual, key)
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got), key
        else:
            assert got == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_error_stats_with_nan_none_inf_zero_and_negative_references() -> None:
    pred = [110.0, 190.0, None, 5.0, NAN, 3.0, -12.0, np.inf, 0.7, 40.0]
    ref = [100.0, 200.0, 50.0, 0.0, 30.0, NAN, -10.0, 20.0, 0.5, 41.0]
    stats = error_stats(pred, ref, epsilon=1.0)
    expected = expected_stats(pred, ref, 1.0)
    assert_stats(stats, expected)
    # By hand: pairs (110,100) (190,200) (5,0) (-12,-10) (0.7,0.5) (40,41); two small refs.
    assert stats.n == 6
    assert stats.n_small_reference == 2
    assert stats.mape_pct == pytest.approx((10 + 5 + 20 + 100 / 41) / 4)
    # Signed: positive = model above DFT, also for negative references.
    assert relative_errors_pct([-12.0], [-10.0], 1.0)[0] == pytest.approx(-20.0)
    assert relative_errors_pct([-8.0], [-10.0], 1.0)[0] == pytest.approx(20.0)


def test_mape_and_mdape_by_hand_with_small_zero_negative_and_nan_references() -> None:
    pred = [110.0, 190.0, 5.0, -12.0, 0.7, NAN, 3.0, 40.0, 130.0, None]
    ref = [100.0, 200.0, 0.0, -10.0, 0.5, 30.0, NAN, 41.0, 100.0, 7.0]
    # Finite pairs: (110,100) (190,200) (5,0) (-12,-10) (0.7,0.5) (40,41) (130,100).
    # |ref| < 1 or ref = 0 leaves (5,0) and (0.7,0.5) out; |r| = 10, 5, 20, 100/41, 30.
    stats = error_stats(pred, ref, epsilon=1.0)
    assert (stats.n, stats.n_mape, stats.n_small_reference) == (7, 5, 2)
    assert stats.mape_pct == pytest.approx((10 + 5 + 20 + 100 / 41 + 30) / 5)
    assert stats.mdape_pct == pytest.approx(10.0)  # sorted: 2.44, 5, 10, 20, 30
    # An even count: the median is the mean of the two middle values.
    even = error_stats(pred[:8], ref[:8], epsilon=1.0)
    assert even.mape_pct == pytest.approx((10 + 5 + 20 + 100 / 41) / 4)
    assert even.mdape_pct == pytest.approx((5 + 10) / 2)
    # epsilon 0: the 0.5 reference (|r| = 40) counts, the zero reference never does.
    zero = error_stats(pred, ref, epsilon=0.0)
    assert (zero.n_mape, zero.n_small_reference) == (6, 1)
    assert zero.mape_pct == pytest.approx((10 + 5 + 20 + 100 / 41 + 30 + 40) / 6)
    assert zero.mdape_pct == pytest.approx((10 + 20) / 2)
    # One huge |r| from a reference just above epsilon moves MAPE, not MdAPE.
    near = error_stats([110.0, 90.0, 105.0, 5.0], [100.0, 100.0, 100.0, 0.011], 0.01)
    assert near.mape_pct == pytest.approx((10 + 10 + 5 + 100 * (5 - 0.011) / 0.011) / 4)
    assert near.mdape_pct == pytest.approx(10.0)
    # No pair with |ref| >= epsilon: both undefined.
    small = error_stats([1.0, 2.0], [0.0, 0.5], 1.0)
    assert math.isnan(small.mape_pct) and math.isnan(small.mdape_pct)


def test_average_over_properties() -> None:
    assert average_over_properties([10.0, NAN, 30.0, np.inf]) == (20.0, 2)
    mean, n = average_over_properties([NAN, NAN])
    assert math.isnan(mean) and n == 0


def test_definitions_name_every_statistic_the_page_prints() -> None:
    assert set(DEFINITIONS) == {
        "MAPE", "MdAPE", "relative error", "average MAPE (8 properties)",
        "average MAPE without A_U and C12-C44", "average MdAPE", "Pearson R", "Born stable",
    }  # fmt: skip
    assert all(text.strip() and text.endswith(".") for text in DEFINITIONS.values())


def test_error_stats_degenerate_inputs() -> None:
    empty = error_stats([], [], 1.0)
    assert empty.n == 0 and math.isnan(empty.mae) and math.isnan(empty.mape_pct)
    assert math.isnan(empty.mdape_pct)
    one = error_stats([2.0], [1.0], 0.5)
    assert one.n == 1 and math.isnan(one.pearson_r) and one.mape_pct == pytest.approx(100.0)
    assert one.rel_iqr_pct == 0.0
    all_zero = error_stats([1.0, 2.0], [0.0, 0.0], 0.0)  # epsilon 0 still excludes ref == 0
    assert all_zero.n == 2 and all_zero.n_mape == 0 and math.isnan(all_zero.mape_pct)
    constant = error_stats([1.0, 2.0, 3.0], [5.0, 5.0, 5.0], 1.0)
    assert math.isnan(constant.pearson_r)
    with pytest.raises(ValueError):
        error_stats([1.0], [1.0, 2.0], 1.0)


def test_error_stats_random_against_independent_computation() -> None:
    rng = np.random.default_rng(7)
    ref = rng.uniform(-50, 300, 200)
    ref[:5] = [0.0, 0.3, -0.2, NAN, 1e-9]
    pred = ref * (1 + 0.1 * rng.standard_normal(200)) + rng.standard_normal(200)
    pred[10:13] = [NAN, np.inf, -np.inf]
    for eps in (0.0, 1.0, 20.0):
        assert_stats(error_stats(pred, ref, eps), expected_stats(list(pred), list(ref), eps))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_against_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    model, dft = rng.random(40) < 0.7, rng.random(40) < 0.8
    scores = confusion(model.tolist(), dft.tolist())
    tn, fp, fn, tp = confusion_matrix(dft, model, labels=[False, True]).ravel()
    assert (scores.tp, scores.fp, scores.fn, scores.tn) == (tp, fp, fn, tn)
    assert scores.accuracy == pytest.approx(accuracy_score(dft, model))
    assert scores.precision == pytest.approx(precision_score(dft, model))
    assert scores.recall == pytest.approx(recall_score(dft, model))
    assert scores.f1 == pytest.approx(f1_score(dft, model))


def test_confusion_zero_denominators_are_nan_like_sklearn_zero_division_nan() -> None:
    model, dft = [False, False, False], [True, True, False]  # nothing predicted stable
    scores = confusion(model, dft)
    assert math.isnan(scores.precision)
    assert math.isnan(precision_score(dft, model, zero_division=np.nan))
    assert scores.recall == recall_score(dft, model) == 0.0
    assert scores.f1 == f1_score(dft, model, zero_division=np.nan) == 0.0
    none = confusion([False, False], [False, False])  # no positives anywhere
    assert math.isnan(none.precision) and math.isnan(none.recall) and math.isnan(none.f1)
    assert math.isnan(f1_score([False, False], [False, False], zero_division=np.nan))
    assert none.accuracy == 1.0
    empty = confusion([], [])
    assert empty.n == 0 and math.isnan(empty.accuracy)


def test_agreement_mean_std_relative_change() -> None:
    calls = {"a": {"m1": True, "m2": False, "m3": True}, "b": {"m1": True, "m2": True}}
    result = agreement(calls)
    assert result[("a", "b")] == result[("b", "a")] == (2, 1)
    assert result[("a", "a")] == (3, 3)
    mean, std = mean_std([1.0, 2.0, 4.0, NAN])
    assert mean == pytest.approx(statistics.fmean([1, 2, 4]))
    assert std == pytest.approx(statistics.stdev([1, 2, 4]))
    assert math.isnan(mean_std([3.0])[1])
    assert relative_change(10.0, 7.5) == pytest.approx(-0.25)
    assert math.isnan(relative_change(0.0, 1.0)) and math.isnan(relative_change(NAN, 1.0))


def test_epsilon_overrides() -> None:
    assert epsilons({"k_vrh": 5.0})["k_vrh"] == 5.0
    with pytest.raises(ReportError, match="unknown property"):
        epsilons({"bogus": 1.0})
    with pytest.raises(ReportError, match="must be finite"):
        epsilons({"k_vrh": -1.0})


# A hand-made reference and results table ------------------------------------------


def ref_row(material_id: str, *, stable: bool | None, included: bool, **values: float):
    source = "none" if not values else ("tensor" if stable is not None else "moduli")
    fields = {p.column: NAN for p in PROPERTIES} | values
    return ReferenceRow(
        material_id=material_id,
        formula="X",
        source=source,
        dft_stable=stable,
        included=included,
        exclusion=None if included else "excluded",
        **fields,
    )


REFERENCE = ReferenceSet(
    name="hand-made",
    rows=(
        ref_row("m1", stable=True, included=True, k_vrh_gpa=100.0, g_vrh_gpa=50.0,
                universal_anisotropy=0.0, cauchy_pressure_gpa=10.0),
        ref_row("m2", stable=True, included=True, k_vrh_gpa=200.0, g_vrh_gpa=80.0,
                universal_anisotropy=0.5, cauchy_pressure_gpa=0.0),
        ref_row("m3", stable=True, included=True, k_vrh_gpa=0.5, g_vrh_gpa=20.0,
                universal_anisotropy=1.2, cauchy_pressure_gpa=-5.0),
        ref_row("m4", stable=False, included=False, k_vrh_gpa=150.0, g_vrh_gpa=60.0),
        ref_row("m5", stable=None, included=False),
        ref_row("m6", stable=True, included=True, k_vrh_gpa=80.0, g_vrh_gpa=30.0,
                cauchy_pressure_gpa=20.0),
        ref_row("m7", stable=True, included=True, k_vrh_gpa=1.0, g_vrh_gpa=1.0),
    ),
)  # fmt: skip


def row(material_id: str, model: str, status: str = "ok", seconds: float = 1.0, **values):
    base: dict[str, Any] = {p.column: None for p in PROPERTIES}
    base |= {
        "material_id": material_id,
        "model": model,
        "formula": "X",
        "status": status,
        "seconds_per_material": seconds,
        "wall_time_s": 2 * seconds,
        "born_stable": None,
    }
    return base | values


ROWS = [
    row("m1", "a", k_vrh_gpa=110.0, g_vrh_gpa=45.0, born_stable=True,
        universal_anisotropy=0.1, cauchy_pressure_gpa=12.0, seconds=1.0),
    row("m2", "a", k_vrh_gpa=190.0, g_vrh_gpa=None, born_stable=True,
        universal_anisotropy=0.4, cauchy_pressure_gpa=1.0, seconds=2.0),
    row("m3", "a", k_vrh_gpa=0.7, g_vrh_gpa=25.0, born_stable=False,
        universal_anisotropy=NAN, cauchy_pressure_gpa=-4.0, seconds=4.0),
    row("m4", "a", k_vrh_gpa=140.0, g_vrh_gpa=70.0, born_stable=True, seconds=3.0),
    row("m5", "a", k_vrh_gpa=10.0, born_stable=True, seconds=1.5),
    row("m6", "a", "failed", seconds=0.0),
    row("m8", "a", k_vrh_gpa=10.0, born_stable=True, seconds=5.0),
    row("m1", "b", "failed", seconds=9.0),
    row("m2", "b", "skipped", seconds=0.0),
    row("m3", "b", k_vrh_gpa=0.4, g_vrh_gpa=18.0, born_stable=True,
        cauchy_pressure_gpa=-6.0, seconds=3.0),
    row("m4", "b", k_vrh_gpa=160.0, born_stable=False, seconds=2.0),
    row("m6", "b", k_vrh_gpa=88.0, g_vrh_gpa=27.0, cauchy_pressure_gpa=15.0, seconds=1.0),
]  # fmt: skip


def test_analyse_hand_made_table_property_metrics() -> None:
    analysis = analyse(ROWS, REFERENCE)
    by_id = REFERENCE.by_id()
    eps = epsilons()
    assert analysis.models == ("a", "b")
    for metrics in analysis.metrics:
        prop = next(p for p in PROPERTIES if p.key == metrics.property)
        scoped = [
            r
            for r in ROWS
            if r["model"] == metrics.model
            and r["material_id"] in by_id
            and by_id[r["material_id"]].included
            and math.isfinite(getattr(by_id[r["material_id"]], prop.column))
        ]
        pred = [r[prop.column] if r["status"] == "ok" else None for r in scoped]
        ref = [getattr(by_id[r["material_id"]], prop.column) for r in scoped]
        assert_stats(metrics, expected_stats(pred, ref, eps[prop.key]))
        statuses = [r["status"] for r in scoped]
        assert metrics.n_rows == len(scoped)
        assert metrics.n_failed == statuses.count("failed")
        assert metrics.n_skipped == statuses.count("skipped")
        assert metrics.n_rows == metrics.n + metrics.n_no_value + metrics.n_failed + (
            metrics.n_skipped
        )
    metrics = {(m.model, m.property): m for m in analysis.metrics}
    k_a = metrics[("a", "k_vrh")]
    # m1, m2, m3 pairs (m3 reference 0.5 < 1 GPa: not in MAPE); m6 failed; m4 unstable,
    # m5 no reference, m8 not in the reference.
    assert (k_a.n, k_a.n_failed, k_a.n_small_reference) == (3, 1, 1)
    assert k_a.mape_pct == pytest.approx(7.5)
    assert k_a.mae == pytest.approx((10 + 10 + 0.2) / 3)
    g_a = metrics[("a", "g_vrh")]
    assert (g_a.n, g_a.n_no_value) == (2, 1)  # m2's G is missing
    au_a = metrics[("a", "universal_anisotropy")]
    assert (au_a.n, au_a.n_small_reference, au_a.n_no_value) == (2, 1, 1)  # m1 ref A_U = 0
    cp_b = metrics[("b", "cauchy_pressure")]
    assert (cp_b.n, cp_b.n_failed, cp_b.n_skipped) == (2, 1, 1)
    assert cp_b.mape_pct == pytest.approx((20 + 25) / 2)
    o = analysis.overview
    assert (o.n_in_both, o.n_dft_unstable_removed, o.n_no_reference_values) == (6, 1, 1)
    assert (o.n_results_without_reference, o.n_used, o.n_reference_materials) == (1, 4, 7)


def test_analyse_hand_made_table_pairs() -> None:
    analysis = analyse(ROWS, REFERENCE)
    pairs = {(p.material_id, p.model, p.property): p for p in analysis.pairs}
    assert pairs[("m3", "a", "k_vrh")].predicted == 0.7
    assert math.isnan(pairs[("m3", "a", "k_vrh")].relative_error_pct)  # |ref| < epsilon
    assert pairs[("m1", "a", "k_vrh")].relative_error_pct == pytest.approx(10.0)
    assert math.isnan(pairs[("m6", "a", "k_vrh")].predicted)
    assert pairs[("m6", "a", "k_vrh")].status == "failed"
    assert ("m4", "a", "k_vrh") not in pairs and ("m8", "a", "k_vrh") not in pairs


def test_analyse_hand_made_table_stability_against_sklearn() -> None:
    analysis = analyse(ROWS, REFERENCE)
    by_id = REFERENCE.by_id()
    for scores in analysis.stability:
        rows = [
            r
            for r in ROWS
            if r["model"] == scores.model
            and by_id.get(r["material_id"], None) is not None
            and by_id[r["material_id"]].dft_stable is not None
        ]
        called = [r for r in rows if r["status"] == "ok" and r["born_stable"] is not None]
        model = [r["born_stable"] for r in called]
        dft = [by_id[r["material_id"]].dft_stable for r in called]
        tn, fp, fn, tp = confusion_matrix(dft, model, labels=[False, True]).ravel()
        assert (scores.n_rows, scores.n_no_call) == (len(rows), len(rows) - len(called))
        assert (scores.tp, scores.fp, scores.fn, scores.tn) == (tp, fp, fn, tn)
        assert scores.accuracy == pytest.approx(accuracy_score(dft, model))
        for mine, theirs in (
            (scores.precision, precision_score(dft, model, zero_division=np.nan)),
            (scores.recall, recall_score(dft, model, zero_division=np.nan)),
            (scores.f1, f1_score(dft, model, zero_division=np.nan)),
        ):
            assert mine == pytest.approx(theirs, nan_ok=True)
    a = next(s for s in analysis.stability if s.model == "a")
    assert (a.tp, a.fp, a.fn, a.tn, a.n_no_call) == (2, 1, 1, 0, 1)
    b = next(s for s in analysis.stability if s.model == "b")
    assert (b.tp, b.fp, b.fn, b.tn, b.n_no_call) == (1, 0, 0, 1, 3)
    agree = {(r.model_a, r.model_b): r for r in analysis.agreement}
    # a calls m1 m2 m3 m4 m5 m8; b calls m3 m4: a says m3 unstable, m4 stable; b the opposite.
    assert (agree[("a", "b")].n, agree[("a", "b")].n_agree) == (2, 0)
    assert agree[(DFT, "a")].agreement == pytest.approx(a.accuracy)
    assert agree[(DFT, "b")].agreement == pytest.approx(b.accuracy)
    assert agree[("a", "a")].agreement == 1.0


def test_analyse_hand_made_table_cost() -> None:
    analysis = analyse(ROWS, REFERENCE)
    for cost in analysis.cost:
        rows = [r for r in ROWS if r["model"] == cost.model]
        ok = [r["seconds_per_material"] for r in rows if r["status"] == "ok"]
        assert cost.n_rows == len(rows)
        assert cost.n_ok == len(ok)
        assert cost.n_failed == sum(r["status"] == "failed" for r in rows)
        assert cost.n_skipped == sum(r["status"] == "skipped" for r in rows)
        assert cost.seconds_per_material_mean_s == pytest.approx(np.mean(ok))
        assert cost.seconds_per_material_std_s == pytest.approx(np.std(ok, ddof=1))
        assert cost.materials_per_second == pytest.approx(len(ok) / sum(ok))
        assert cost.wall_time_mean_s == pytest.approx(2 * np.mean(ok))


def test_analyse_reference_without_stability_has_no_stability_rows() -> None:
    kg_only = ReferenceSet(
        name="kg",
        rows=(ref_row("m1", stable=None, included=True, k_vrh_gpa=100.0, g_vrh_gpa=50.0),),
    )
    analysis = analyse(ROWS, kg_only)
    assert analysis.stability == ()
    assert {r.model_a for r in analysis.agreement} == {"a", "b"}  # model vs model only


def test_analyse_pairs_carry_the_stability_calls() -> None:
    analysis = analyse(ROWS, REFERENCE)
    pairs = {(p.material_id, p.model, p.property): p for p in analysis.pairs}
    assert pairs[("m1", "a", "k_vrh")].model_born_stable is True
    assert pairs[("m3", "a", "k_vrh")].model_born_stable is False
    assert pairs[("m6", "a", "k_vrh")].model_born_stable is None  # failed: no call
    assert pairs[("m6", "b", "k_vrh")].model_born_stable is None  # ok, no call
    # Only DFT-stable materials are in scope, so the DFT call is True (or None: no tensor).
    assert {p.dft_born_stable for p in analysis.pairs} == {True}
    kg_only = ReferenceSet(
        name="kg",
        rows=(ref_row("m1", stable=None, included=True, k_vrh_gpa=100.0, g_vrh_gpa=50.0),),
    )
    assert {p.dft_born_stable for p in analyse(ROWS, kg_only).pairs} == {None}


# Averages over properties: three materials, every property known -----------------

_NORMAL = [p for p in PROPERTIES if p.key not in NEAR_ZERO_PROPERTIES]
_AU, _CP = "universal_anisotropy", "cauchy_pressure_gpa"
AVERAGE_REFERENCE = ReferenceSet(
    name="averages",
    rows=tuple(
        ref_row(f"m{i}", stable=True, included=True,
                **{p.column: 100.0 for p in _NORMAL}, **{_AU: au, _CP: cp})
        for i, (au, cp) in enumerate([(0.02, 1.0), (0.02, -2.0), (0.005, 0.0)])
    ),
)  # fmt: skip
_PREDICTED = [(110.0, 0.2, 11.0), (70.0, 0.03, -4.0), (101.0, 0.5, 3.0)]
AVERAGE_ROWS = [
    row(f"m{i}", "a", born_stable=True, **{p.column: normal for p in _NORMAL}, **{_AU: au, _CP: cp})
    for i, (normal, au, cp) in enumerate(_PREDICTED)
] + [row("m0", "b", k_vrh_gpa=90.0), row("m1", "b", k_vrh_gpa=120.0)]  # fmt: skip


def test_averages_over_properties_by_hand() -> None:
    analysis = analyse(AVERAGE_ROWS, AVERAGE_REFERENCE)
    metrics = {(m.model, m.property): m for m in analysis.metrics}
    # Six properties: |r| = 10, 30, 1 -> MAPE 41/3, MdAPE 10.
    for p in _NORMAL:
        assert metrics[("a", p.key)].mape_pct == pytest.approx(41 / 3)
        assert metrics[("a", p.key)].mdape_pct == pytest.approx(10.0)
    # A_U: the third reference (0.005) is below epsilon 0.01; |r| = 900, 50.
    au = metrics[("a", "universal_anisotropy")]
    assert (au.n, au.n_mape) == (3, 2)
    assert au.mape_pct == pytest.approx(475) and au.mdape_pct == pytest.approx(475)
    # Cauchy pressure: reference 0 left out; |r| = 1000 (1 -> 11), 100 (-2 -> -4).
    cp = metrics[("a", "cauchy_pressure")]
    assert (cp.n_mape, cp.mape_pct, cp.mdape_pct) == (2, pytest.approx(550), pytest.approx(550))
    averages = {a.model: a for a in analysis.averages}
    assert averages["a"] == AverageErrorRow(
        model="a",
        n_properties=8,
        n_properties_without_near_zero=6,
        average_mape_pct=pytest.approx((6 * 41 / 3 + 475 + 550) / 8),
        average_mape_without_near_zero_pct=pytest.approx(41 / 3),
        average_mdape_pct=pytest.approx((6 * 10 + 475 + 550) / 8),
        average_mdape_without_near_zero_pct=pytest.approx(10.0),
    )
    # Model b has only K: properties without a MAPE are left out of the means, and counted.
    b = averages["b"]
    assert (b.n_properties, b.n_properties_without_near_zero) == (1, 1)
    assert b.average_mape_pct == b.average_mape_without_near_zero_pct == pytest.approx(15.0)
    assert b.average_mdape_pct == pytest.approx(15.0)
    assert average_errors(analysis.metrics) == analysis.averages
    assert [a.model for a in analysis.averages] == list(analysis.models)


def test_averages_match_the_metrics_table() -> None:
    analysis = analyse(ROWS, REFERENCE)
    for average in analysis.averages:
        own = [m for m in analysis.metrics if m.model == average.model]
        everything = [m.mape_pct for m in own if math.isfinite(m.mape_pct)]
        kept = [
            m.mape_pct
            for m in own
            if math.isfinite(m.mape_pct) and m.property not in NEAR_ZERO_PROPERTIES
        ]
        assert average.n_properties == len(everything)
        assert average.average_mape_pct == pytest.approx(statistics.fmean(everything))
        assert average.average_mape_without_near_zero_pct == pytest.approx(statistics.fmean(kept))
