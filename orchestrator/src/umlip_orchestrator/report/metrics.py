"""The statistics of a comparison with DFT (SCIENCE.md §4), on plain arrays.

Rules (also in ``docs/report.md``):

- A pair (prediction, reference) counts only when both are finite; NaN, infinities and
  missing values are never averaged, they are counted by the caller.
- Relative error r = (pred - ref) / |ref|, in percent; positive means the model is
  above DFT whatever the sign of ref. Pairs with |ref| < epsilon are left out of the
  relative errors and of MAPE (counted in ``n_small_reference``); they still count in
  n, MAE, Pearson R and the means.
- MAPE = mean |r|; MdAPE = median |r| (robust to a few huge |r|, e.g. from references
  just above epsilon). Quartiles and medians use numpy's default (linear)
  interpolation; IQR = Q3 - Q1.
- Averages over properties (:func:`average_over_properties`) are plain means of the
  per-property values that are finite (as the study Gao & Wang 2025 averages its 8
  MAPEs); how many properties took part is returned with them.
- Pearson R is NaN for fewer than 2 pairs or when either side is constant.
- Standard deviations are sample ones (ddof=1), NaN for fewer than 2 values.
- Stability: positive class = stable. A ratio whose denominator is 0 is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
from numpy.typing import ArrayLike, NDArray

NAN = math.nan

#: One sentence per statistic of the report, for the page to print (key: its name there).
DEFINITIONS: dict[str, str] = {
    "relative error": (
        "Signed relative error r = 100 (model - DFT) / |DFT| in %, positive when the model "
        "is above DFT; pairs with |DFT| < epsilon (or DFT = 0) have none and are left out "
        "of MAPE, MdAPE and the relative-error statistics."
    ),
    "MAPE": (
        "Mean absolute percentage error: the mean of |r| over the pairs with |DFT| >= "
        "epsilon; one very large |r| (a DFT value close to zero) can dominate it."
    ),
    "MdAPE": (
        "Median absolute percentage error: the median of |r| over the same pairs as MAPE, "
        "robust to a few extreme relative errors."
    ),
    "average MAPE (8 properties)": (
        "Plain mean of a model's per-property MAPEs over the 8 properties (as Gao & Wang "
        "2025 average them), over those with a MAPE (n_properties)."
    ),
    "average MAPE without A_U and C12-C44": (
        "The same mean without the universal anisotropy A_U and the Cauchy pressure "
        "C12-C44, whose DFT values lie near zero for many materials so that their MAPEs "
        "(often hundreds of %) dominate the 8-property average."
    ),
    "average MdAPE": "Plain mean of a model's per-property MdAPEs, over the same properties.",
    "Pearson R": (
        "Pearson correlation coefficient between model and DFT values over all pairs "
        "(including |DFT| < epsilon); undefined for fewer than 2 pairs or a constant side."
    ),
    "Born stable": (
        "A tensor is Born stable when its symmetrised 6x6 Voigt elastic tensor is positive "
        "definite (all eigenvalues > 0); the model's call uses its fitted tensor, DFT's "
        "the reference tensor."
    ),
}


@dataclass(frozen=True)
class ErrorStats:
    """Error statistics of predictions against references (see the module rules).

    Attributes:
        n: Pairs where both are finite.
        mae: Mean absolute error, in the property's unit.
        pearson_r: Pearson correlation coefficient.
        mean_model: Mean of the predictions.
        mean_dft: Mean of the references.
        n_mape: Pairs in MAPE and in the relative errors (|ref| >= epsilon).
        n_small_reference: Pairs left out of them (|ref| < epsilon).
        mape_pct: Mean absolute percentage error, %.
        mdape_pct: Median absolute percentage error, %.
        rel_median_pct: Median signed relative error, %.
        rel_mean_pct: Mean signed relative error, %.
        rel_q1_pct: First quartile of the signed relative error, %.
        rel_q3_pct: Third quartile, %.
        rel_iqr_pct: Interquartile range Q3 - Q1, %.
    """

    n: int
    mae: float
    pearson_r: float
    mean_model: float
    mean_dft: float
    n_mape: int
    n_small_reference: int
    mape_pct: float
    mdape_pct: float
    rel_median_pct: float
    rel_mean_pct: float
    rel_q1_pct: float
    rel_q3_pct: float
    rel_iqr_pct: float


def finite_pairs(pred: ArrayLike, ref: ArrayLike) -> NDArray[np.bool_]:
    """Mask of the pairs where both values are finite (None counts as missing)."""
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    return np.isfinite(p) & np.isfinite(r)


def relative_errors_pct(pred: ArrayLike, ref: ArrayLike, epsilon: float) -> NDArray[np.float64]:
    """Signed relative errors 100 (pred - ref) / |ref|; NaN where not defined.

    Not defined: either value not finite, or |ref| < epsilon.
    """
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    out = np.full(p.shape, NAN)
    ok = finite_pairs(p, r) & (np.abs(r) >= epsilon) & (r != 0.0)
    out[ok] = 100.0 * (p[ok] - r[ok]) / np.abs(r[ok])
    return out


def pearson(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """Pearson R of two finite arrays; NaN for n < 2 or a constant array."""
    if len(x) < 2:
        return NAN
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    if denominator == 0.0:
        return NAN
    return max(-1.0, min(1.0, float(np.dot(dx, dy)) / denominator))


def error_stats(pred: ArrayLike, ref: ArrayLike, epsilon: float) -> ErrorStats:
    """Statistics of ``pred`` against ``ref`` over the finite pairs (module rules).

    Args:
        pred: Model values (NaN or None where missing).
        ref: Reference values, same length.
        epsilon: |ref| below which a pair leaves MAPE and the relative errors.
    """
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref differ in shape: {p.shape} vs {r.shape}")
    mask = finite_pairs(p, r)
    p, r = p[mask], r[mask]
    rel = relative_errors_pct(p, r, epsilon)
    rel = rel[np.isfinite(rel)]
    n = len(p)
    if len(rel):
        q1, median, q3 = (float(v) for v in np.percentile(rel, [25.0, 50.0, 75.0]))
        mape, rel_mean = float(np.mean(np.abs(rel))), float(np.mean(rel))
        mdape = float(np.median(np.abs(rel)))
    else:
        q1 = median = q3 = mape = mdape = rel_mean = NAN
    return ErrorStats(
        n=n,
        mae=float(np.mean(np.abs(p - r))) if n else NAN,
        pearson_r=pearson(p, r),
        mean_model=float(np.mean(p)) if n else NAN,
        mean_dft=float(np.mean(r)) if n else NAN,
        n_mape=len(rel),
        n_small_reference=n - len(rel),
        mape_pct=mape,
        mdape_pct=mdape,
        rel_median_pct=median,
        rel_mean_pct=rel_mean,
        rel_q1_pct=q1,
        rel_q3_pct=q3,
        rel_iqr_pct=q3 - q1,
    )


@dataclass(frozen=True)
class Confusion:
    """Stability calls of a model against DFT (positive class = stable).

    Attributes:
        n: Materials with both calls.
        tp: Stable by both. fp: model stable, DFT unstable.
        fn: Model unstable, DFT stable. tn: unstable by both.
        accuracy, precision, recall, f1: The usual ratios; NaN on a zero denominator.
    """

    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    accuracy: float
    precision: float
    recall: float
    f1: float


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else NAN


def confusion(model_stable: Sequence[bool], dft_stable: Sequence[bool]) -> Confusion:
    """Confusion matrix and scores of stability calls (same length, no missing calls)."""
    if len(model_stable) != len(dft_stable):
        raise ValueError("model and DFT calls differ in length")
    pairs = list(zip((bool(m) for m in model_stable), (bool(d) for d in dft_stable), strict=True))
    tp = sum(m and d for m, d in pairs)
    fp = sum(m and not d for m, d in pairs)
    fn = sum(d and not m for m, d in pairs)
    tn = sum(not m and not d for m, d in pairs)
    return Confusion(
        n=len(pairs),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        accuracy=_ratio(tp + tn, len(pairs)),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
    )


def agreement(
    calls: Mapping[str, Mapping[str, bool]],
) -> dict[tuple[str, str], tuple[int, int]]:
    """Pairwise agreement of stability calls.

    Args:
        calls: Per model (or ``"DFT"``), its call per material id (materials without a
            call absent).

    Returns:
        For every ordered pair of names (diagonal included): (materials both called,
        materials where the calls agree).
    """
    result = {}
    for a, b in product(calls, repeat=2):
        common = calls[a].keys() & calls[b].keys()
        result[(a, b)] = (len(common), sum(calls[a][m] == calls[b][m] for m in common))
    return result


def average_over_properties(values: ArrayLike) -> tuple[float, int]:
    """Plain mean of the finite per-property values, and how many there were.

    Returns:
        (mean, count); the mean is NaN when no value is finite.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return (float(np.mean(v)) if len(v) else NAN), len(v)


def mean_std(values: ArrayLike) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of the finite values; NaN if too few."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    mean = float(np.mean(v)) if len(v) else NAN
    std = float(np.std(v, ddof=1)) if len(v) >= 2 else NAN
    return mean, std


def relative_change(before: float, after: float) -> float:
    """(after - before) / before; NaN when before is 0 or either is not finite."""
    if not (math.isfinite(before) and math.isfinite(after)) or before == 0.0:
        return NAN
    return (after - before) / before
