"""The report's figures, drawn with matplotlib's Agg backend and saved as PNG and SVG.

Figures are built as ``matplotlib.figure.Figure`` objects on an Agg canvas, never through
pyplot: no display is needed and the process's pyplot backend is left alone.

Each function returns a :class:`Figure` description (or None when there is nothing to
draw, e.g. no stability calls); :func:`draw_all` saves every figure of an analysis
under ``REPORT_DIR/figures/``.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from umlip_orchestrator.report.analysis import Analysis, PairRow
from umlip_orchestrator.report.spec import PROPERTIES, PropertySpec

_RC = {"svg.hashsalt": "umlip", "font.size": 9, "axes.titlesize": 9}
_DPI = 110
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Figure:
    """A saved figure.

    Attributes:
        stem: File name without extension, e.g. ``"parity_k_vrh"``.
        title: Heading for the HTML page.
        caption: What it shows, in one or two sentences.
        files: Paths of the PNG and SVG files, relative to the report directory.
    """

    stem: str
    title: str
    caption: str
    files: tuple[str, ...]


def _styled(draw: Callable[P, R]) -> Callable[P, R]:
    """Runs a drawing function under the report's matplotlib settings."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(_RC):
            return draw(*args, **kwargs)

    return wrapper


def save(fig: MplFigure, out_dir: Path, stem: str) -> tuple[str, ...]:
    """Saves ``fig`` as ``figures/<stem>.png`` and ``.svg``; returns the relative paths."""
    FigureCanvasAgg(fig)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    files = []
    for ext in ("png", "svg"):
        relative = f"figures/{stem}.{ext}"
        metadata = {"Date": None} if ext == "svg" else {}
        fig.savefig(out_dir / relative, dpi=_DPI, metadata=metadata)
        files.append(relative)
    return tuple(files)


def _margins(
    fig: MplFigure,
    *,
    left: float = 0.8,
    right: float = 0.25,
    bottom: float = 0.8,
    top: float = 0.4,
    wspace: float = 0.35,
    hspace: float = 0.55,
) -> None:
    """Fixed margins in inches (no layout engine: measuring text is slow)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace,
        hspace=hspace,
    )


def _new(
    n_panels: int, *, ncols: int = 4, size: float = 3.2, label_chars: int = 6
) -> tuple[MplFigure, list]:
    """A grid of panels; ``label_chars``: longest x tick label (rotated 30 degrees)."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    extra = 0.035 * label_chars  # inches below the axis taken by a rotated label
    fig = MplFigure(figsize=(size * ncols + 0.6, (size + extra) * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    _margins(fig, bottom=0.45 + extra, hspace=(0.75 + extra) / size)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _chars(names: Sequence[str]) -> int:
    return max((len(n) for n in names), default=1)


def _pairs(analysis: Analysis) -> dict[tuple[str, str], list[PairRow]]:
    index: dict[tuple[str, str], list[PairRow]] = defaultdict(list)
    for pair in analysis.pairs:
        index[(pair.model, pair.property)].append(pair)
    return index


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


@_styled
def parity(analysis: Analysis, prop: PropertySpec, out_dir: Path) -> Figure | None:
    """Model vs DFT scatter, one panel per model, with the identity line."""
    index = _pairs(analysis)
    data = []
    for model in analysis.models:
        rows = [p for p in index[(model, prop.key)] if math.isfinite(p.predicted)]
        data.append((model, [p.reference for p in rows], [p.predicted for p in rows]))
    if not any(ref for _, ref, _ in data):
        return None
    values = np.concatenate([np.r_[r, p] for _, r, p in data if r])
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo or 1.0)
    fig, axes = _new(len(data), size=3.4, label_chars=0)
    stats = {(m.model, m.property): m for m in analysis.metrics}
    for ax, (model, ref, pred) in zip(axes, data, strict=True):
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=0.8, ls="--")
        ax.scatter(ref, pred, s=9, alpha=0.6, edgecolors="none")
        m = stats[(model, prop.key)]
        ax.set_title(f"{model}: n={m.n}, MAE={m.mae:.3g}, R={m.pearson_r:.3f}")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(f"DFT {prop.title}")
        ax.set_ylabel(f"model {prop.title}")
    files = save(fig, out_dir, f"parity_{prop.key}")
    return Figure(
        f"parity_{prop.key}",
        f"Parity: {prop.title}",
        f"Model {prop.label} against DFT per model; dashed line: identity.",
        files,
    )


@_styled
def violins(analysis: Analysis, out_dir: Path) -> Figure | None:
    """Distributions of each property: DFT, then each model, over the same materials."""
    index = _pairs(analysis)
    panels = []
    for prop in PROPERTIES:
        refs = {p.material_id: p.reference for m in analysis.models for p in index[(m, prop.key)]}
        if not refs:
            continue
        series = [("DFT", _finite(list(refs.values())))]
        series += [
            (m, _finite([p.predicted for p in index[(m, prop.key)]])) for m in analysis.models
        ]
        panels.append((prop, series))
    if not panels:
        return None
    fig, axes = _new(len(panels), ncols=2, size=4.2, label_chars=_chars(analysis.models))
    for ax, (prop, series) in zip(axes, panels, strict=True):
        for position, (_, values) in enumerate(series, start=1):
            if len(np.unique(values)) >= 2:
                ax.violinplot(values, positions=[position], showmedians=True, widths=0.8)
            elif len(values):
                ax.scatter([position] * len(values), values, s=12)
        every = np.concatenate([v for _, v in series])
        if len(every) >= 2:
            low, high = np.percentile(every, [1.0, 99.0])
            pad = 0.1 * (high - low or abs(high) or 1.0)
            ax.set_ylim(low - pad, high + pad)
        ax.set_xticks(range(1, len(series) + 1), [name for name, _ in series], rotation=30)
        ax.set_title(prop.title)
    files = save(fig, out_dir, "violins")
    return Figure(
        "violins",
        "Distributions against DFT",
        "Violin plots (median marked) of each property: DFT, then each model, over the "
        "materials of the comparison; the value axis spans the 1st to 99th percentile.",
        files,
    )


@_styled
def relative_error_boxes(analysis: Analysis, out_dir: Path) -> Figure | None:
    """Box plots of the signed relative errors, one panel per property."""
    index = _pairs(analysis)
    panels = []
    for prop in PROPERTIES:
        series = [
            (m, _finite([p.relative_error_pct for p in index[(m, prop.key)]]))
            for m in analysis.models
        ]
        if any(len(v) for _, v in series):
            panels.append((prop, series))
    if not panels:
        return None
    fig, axes = _new(len(panels), size=3.2, label_chars=_chars(analysis.models))
    for ax, (prop, series) in zip(axes, panels, strict=True):
        ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
        ax.boxplot([v if len(v) else [np.nan] for _, v in series], showfliers=False, whis=1.5)
        ax.set_xticks(range(1, len(series) + 1), [m for m, _ in series], rotation=30)
        ax.set_title(prop.label)
        ax.set_ylabel("relative error (%)")
    files = save(fig, out_dir, "relative_errors")
    return Figure(
        "relative_errors",
        "Relative errors",
        "Signed relative error 100 (model - DFT) / |DFT| per property and model: box = "
        "quartiles, line = median, whiskers = 1.5 IQR; outliers not drawn.",
        files,
    )


def _matrix(
    ax,
    values: np.ndarray,
    labels: np.ndarray,
    names: tuple[Sequence[str], Sequence[str]],
    cmap: str,
    limits: tuple[float, float] | None = None,
) -> None:
    """An annotated heat map; NaN cells grey; text black or white by cell luminance."""
    vmin, vmax = limits if limits else (None, None)
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=colormap, vmin=vmin, vmax=vmax)
    ax.set_aspect("auto")
    for (i, j), text in np.ndenumerate(labels):
        red, green, blue, _ = colormap(image.norm(values[i, j]))
        dark = np.isfinite(values[i, j]) and 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black")
    rows, cols = names
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


@_styled
def mape_heatmap(analysis: Analysis, out_dir: Path) -> Figure | None:
    """MAPE per model (rows) and property (columns), values annotated."""
    if not analysis.models:
        return None
    by_key = {(m.model, m.property): m.mape_pct for m in analysis.metrics}
    values = np.array([[by_key[(m, p.key)] for p in PROPERTIES] for m in analysis.models])
    labels = np.vectorize(lambda v: "-" if not np.isfinite(v) else f"{v:.1f}")(values)
    fig = MplFigure(figsize=(1.1 * len(PROPERTIES) + 2.5, 0.6 * len(analysis.models) + 1.6))
    ax = fig.subplots()
    names = (analysis.models, [p.label for p in PROPERTIES])
    _margins(fig, left=0.4 + 0.085 * _chars(analysis.models), right=0.2, bottom=0.75)
    _matrix(ax, values, labels, names, "viridis_r")
    ax.set_title("MAPE (%) vs DFT")
    files = save(fig, out_dir, "mape_heatmap")
    return Figure(
        "mape_heatmap",
        "MAPE heat map",
        "Mean absolute percentage error (%) per model and property; '-' where there is "
        "no reference value or no pair with |DFT| >= epsilon.",
        files,
    )


@_styled
def agreement_matrix(analysis: Analysis, out_dir: Path) -> Figure | None:
    """Fraction of materials on which two models (and DFT) agree on Born stability."""
    if not analysis.agreement:
        return None
    names = list(dict.fromkeys(r.model_a for r in analysis.agreement))
    by_pair = {(r.model_a, r.model_b): r for r in analysis.agreement}
    values = np.array([[by_pair[(a, b)].agreement for b in names] for a in names])
    labels = np.array(
        [
            [
                f"{by_pair[(a, b)].agreement:.2f}\nn={by_pair[(a, b)].n}"
                if by_pair[(a, b)].n
                else "-"
                for b in names
            ]
            for a in names
        ]
    )
    size = 1.1 * len(names) + 2
    fig = MplFigure(figsize=(size + 1, size))
    ax = fig.subplots()
    chars = _chars(names)
    _margins(fig, left=0.4 + 0.085 * chars, right=0.2, bottom=0.45 + 0.035 * chars)
    _matrix(ax, values, labels, (names, names), "viridis", limits=(0.0, 1.0))
    ax.set_title("Born-stability agreement")
    files = save(fig, out_dir, "stability_agreement")
    return Figure(
        "stability_agreement",
        "Stability agreement",
        "Fraction of materials (n: both have a call) on which two models, or a model and "
        "DFT, make the same Born-stability call.",
        files,
    )


@_styled
def timing(analysis: Analysis, out_dir: Path) -> Figure | None:
    """Mean seconds per material per model, with the standard deviation as error bar."""
    if not analysis.cost:
        return None
    names = [c.model for c in analysis.cost]
    means = np.array([c.seconds_per_material_mean_s for c in analysis.cost])
    stds = np.nan_to_num(np.array([c.seconds_per_material_std_s for c in analysis.cost]))
    fig = MplFigure(figsize=(1.0 * len(names) + 3, 3.4 + 0.035 * _chars(names)))
    ax = fig.subplots()
    _margins(fig, bottom=0.45 + 0.035 * _chars(names))
    bars = ax.bar(names, np.nan_to_num(means), yerr=stds, capsize=4, color="tab:blue")
    ax.tick_params(axis="x", labelrotation=30)
    for bar, cost, std in zip(bars, analysis.cost, stds, strict=True):
        ax.annotate(
            f"{cost.materials_per_second:.3g}/s",
            (bar.get_x() + bar.get_width() / 2, bar.get_height() + std),
            ha="center",
            va="bottom",
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_ylabel("seconds per material")
    ax.set_title("Cost per material (ok rows)")
    files = save(fig, out_dir, "timing")
    return Figure(
        "timing",
        "Timing",
        "Mean wall time per material (error bar: standard deviation), labelled with "
        "materials per second.",
        files,
    )


def draw_all(analysis: Analysis, out_dir: Path) -> list[Figure]:
    """Draws and saves every figure of the report; returns those drawn, in page order."""
    figures = [mape_heatmap(analysis, out_dir)]
    figures += [parity(analysis, prop, out_dir) for prop in PROPERTIES]
    figures += [
        violins(analysis, out_dir),
        relative_error_boxes(analysis, out_dir),
        agreement_matrix(analysis, out_dir),
        timing(analysis, out_dir),
    ]
    return [f for f in figures if f is not None]
