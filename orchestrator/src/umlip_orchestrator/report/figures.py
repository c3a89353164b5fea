"""The report's figures, drawn with matplotlib's Agg backend and saved as PNG and SVG.

Figures are built as ``matplotlib.figure.Figure`` objects on an Agg canvas, never through
pyplot: no display is needed and the process's pyplot backend is left alone.

Each function returns a :class:`Figure` description (or None when there is nothing to
draw, e.g. no stability calls); :func:`draw_all` saves every figure of an analysis
under ``REPORT_DIR/figures/``.

Value axes are robust to outliers (:func:`bulk_limits`): they span the bulk of the
values, and what lies outside is counted on the figure. In the SVG of a parity plot
every point is a link to its material's page (:func:`material_href`),
inside a group ``stable-points-<i>`` or ``unstable-points-<i>`` (i: the model's panel).
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure as MplFigure

from umlip_orchestrator.report.analysis import (
    NEAR_ZERO_PROPERTIES,
    Analysis,
    PairRow,
    average_errors,
)
from umlip_orchestrator.report.materials import page_href
from umlip_orchestrator.report.spec import PROPERTIES, PropertySpec

_RC = {"svg.hashsalt": "umlip", "font.size": 9, "axes.titlesize": 9}
_DPI = 110
#: Percentiles (of all values shown) that define the bulk of a value axis.
BULK_PERCENTILES = (2.0, 98.0)
#: The axis extends beyond the bulk by this fraction of its width (never past the data).
BULK_WIDEN = 0.5
#: Marker of a point whose model or DFT tensor is not Born-stable.
UNSTABLE_LABEL = "Born-unstable tensor"
_BLANK_TARGET = re.compile(r'(<a xlink:href="[^"]*") target="_blank"(/?>)')
#: No date, type, format or creator (with its https:// address) in the SVG: the files
#: are reproducible and, shown inline in the page, name no address.
_SVG_METADATA = {"Date": None, "Type": None, "Format": None, "Creator": None}
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
    """Saves ``fig`` as ``figures/<stem>.png`` and ``.svg``; returns the relative paths.

    The SVG has no metadata block (:data:`_SVG_METADATA`). Its links (``set_urls``)
    open in the same window: matplotlib's ``target="_blank"`` is dropped, so each is a
    plain ``<a xlink:href="...">`` (or an empty ``<a xlink:href="..."/>`` when
    matplotlib culls a lone marker off the canvas).
    """
    FigureCanvasAgg(fig)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    files = []
    for ext in ("png", "svg"):
        relative = f"figures/{stem}.{ext}"
        metadata = _SVG_METADATA if ext == "svg" else {}
        fig.savefig(out_dir / relative, dpi=_DPI, metadata=metadata)
        if ext == "svg":
            path = out_dir / relative
            text = path.read_text(encoding="utf-8")
            path.write_text(_BLANK_TARGET.sub(r"\1\2", text), encoding="utf-8")
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


def material_href(material_id: str, model: str | None = None) -> str:
    """The link of a material's page (at ``model``'s section), relative to the report
    directory (:func:`~umlip_orchestrator.report.materials.page_href`)."""
    return page_href(material_id) + (f"#model-{model}" if model else "")


def bulk_limits(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Axis limits that span the bulk of the finite ``values``, padded by 5 %.

    The bulk runs from the 2nd to the 98th percentile (rounded inwards to data values,
    so that one outlier among few values does not drag it), widened on each side by
    half its width but never beyond the smallest and largest value.
    """
    v = _finite(list(np.ravel(values)))
    if not len(v):
        return 0.0, 1.0
    low = float(np.percentile(v, BULK_PERCENTILES[0], method="higher"))
    high = float(np.percentile(v, BULK_PERCENTILES[1], method="lower"))
    width = high - low
    low = max(float(v.min()), low - BULK_WIDEN * width)
    high = min(float(v.max()), high + BULK_WIDEN * width)
    pad = 0.05 * (high - low or abs(high) or 1.0)
    return low - pad, high + pad


def _outside(x: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    return (x < limits[0]) | (x > limits[1])


def _count_text(n: int, what: str = "point") -> str:
    return f"{n} {what}{'' if n == 1 else 's'} outside the axes"


@_styled
def parity(analysis: Analysis, prop: PropertySpec, out_dir: Path) -> Figure | None:
    """Model vs DFT scatter, one panel per model, with the identity line.

    Points whose model tensor (or DFT tensor) is not Born-stable get their own marker.
    Both axes span the bulk of every value shown (all models and DFT, see
    :func:`bulk_limits`); each panel says how many of its points lie outside. In the
    SVG each point links to its material's page (``set_urls``), stable points in the
    group ``stable-points-<i>``, unstable ones in ``unstable-points-<i>``, i = 0, 1, ...
    the panel (model) index.
    """
    index = _pairs(analysis)
    data = []
    for model in analysis.models:
        rows = [p for p in index[(model, prop.key)] if math.isfinite(p.predicted)]
        data.append((model, rows))
    if not any(rows for _, rows in data):
        return None
    every = [v for _, rows in data for p in rows for v in (p.reference, p.predicted)]
    limits = bulk_limits(every)
    fig, axes = _new(len(data), size=3.4, label_chars=0)
    stats = {(m.model, m.property): m for m in analysis.metrics}
    outside_total = 0
    for i, (ax, (model, rows)) in enumerate(zip(axes, data, strict=True)):
        ax.plot(limits, limits, color="0.4", lw=0.8, ls="--")
        unstable = [p.model_born_stable is False or p.dft_born_stable is False for p in rows]
        stable = [p for p, u in zip(rows, unstable, strict=True) if not u]
        flagged = [p for p, u in zip(rows, unstable, strict=True) if u]
        groups = (
            ("stable-points", stable, {"s": 9, "alpha": 0.6, "edgecolors": "none"}, None),
            (
                "unstable-points",
                flagged,
                {"marker": "x", "color": "tab:red", "s": 18, "linewidths": 1.0},
                f"{UNSTABLE_LABEL} ({len(flagged)})",
            ),
        )
        for gid, points, style, label in groups:
            if not points:
                continue
            collection = ax.scatter(
                [p.reference for p in points], [p.predicted for p in points], label=label, **style
            )
            collection.set_urls([material_href(p.material_id, model) for p in points])
            collection.set_gid(f"{gid}-{i}")
        x = np.array([p.reference for p in rows])
        y = np.array([p.predicted for p in rows])
        n_outside = int(np.count_nonzero(_outside(x, limits) | _outside(y, limits)))
        outside_total += n_outside
        ax.text(0.03, 0.97, _count_text(n_outside), transform=ax.transAxes, va="top", fontsize=8)
        if any(unstable):
            ax.legend(loc="lower right", fontsize=7, handletextpad=0.3, borderpad=0.3)
        m = stats[(model, prop.key)]
        ax.set_title(f"{model}: n={m.n}, MAE={m.mae:.3g}, R={m.pearson_r:.3f}")
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)
        ax.set_aspect("equal")
        ax.set_xlabel(f"DFT {prop.title}")
        ax.set_ylabel(f"model {prop.title}")
    files = save(fig, out_dir, f"parity_{prop.key}")
    return Figure(
        f"parity_{prop.key}",
        f"Parity: {prop.title}",
        f"Model {prop.label} against DFT per model; dashed line: identity; red x: "
        f"{UNSTABLE_LABEL} (the model's or DFT's, see 'Born stable'). Both axes "
        "span the bulk of all values shown (2nd to 98th percentile over every model and "
        "DFT, widened by half that range, never beyond the data); points outside are "
        f"not drawn and counted in each panel ({outside_total} in all). In the SVG, a "
        "point links to its material's page.",
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
        limits = bulk_limits(every)
        ax.set_ylim(*limits)
        names = [name for name, _ in series]
        ax.set_xticks(range(1, len(series) + 1), names, rotation=30, ha="right")
        n_outside = int(np.count_nonzero(_outside(every, limits)))
        ax.set_title(f"{prop.title}: {_count_text(n_outside, 'value')}")
    files = save(fig, out_dir, "violins")
    return Figure(
        "violins",
        "Distributions against DFT",
        "Violin plots (median marked) of each property: DFT, then each model, over the "
        "materials of the comparison. The value axis spans the bulk of the values (2nd "
        "to 98th percentile of all values of the panel, widened by half that range, never "
        "beyond the data): the violins are clipped there, and each title says how many "
        "values lie outside. Medians and densities use every value.",
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
        "Signed relative error 100 (model - DFT) / |DFT| per property and model, over the "
        "pairs with |DFT| >= epsilon: box = quartiles, line = median, whiskers = the "
        "furthest values within 1.5 IQR of the box. Values beyond the whiskers (outliers) "
        "are not drawn, and the value axis spans the whiskers; the quartiles and median "
        "use every value.",
        files,
    )


def _matrix(
    ax,
    values: np.ndarray,
    labels: np.ndarray,
    names: tuple[Sequence[str], Sequence[str]],
    cmap: str,
    limits: tuple[float, float] | None = None,
    *,
    norm: Normalize | None = None,
    colorbar: bool = True,
):
    """An annotated heat map; NaN cells grey; text black or white by cell luminance.

    Returns the colour bar (None without one).
    """
    if norm is None:
        vmin, vmax = limits if limits else (None, None)
        norm = Normalize(vmin=vmin, vmax=vmax)
    colormap = matplotlib.colormaps[cmap].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=colormap, norm=norm)
    ax.set_aspect("auto")
    for (i, j), text in np.ndenumerate(labels):
        red, green, blue, _ = colormap(image.norm(values[i, j]))
        dark = np.isfinite(values[i, j]) and 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black")
    rows, cols = names
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    return ax.figure.colorbar(image, ax=ax, shrink=0.8) if colorbar else None


def _percent_label(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _per_column(values: np.ndarray) -> np.ndarray:
    """Each column mapped to 0 (its lowest value) .. 1 (its highest), on a log scale.

    NaN stays NaN; a column with a single distinct value maps to 0.5.
    """
    logs = np.log10(np.maximum(np.where(np.isfinite(values), values, np.nan), 1e-2))
    out = np.full(values.shape, np.nan)
    for j in range(values.shape[1]):
        column = logs[:, j]
        finite = np.isfinite(column)
        if not finite.any():
            continue
        low, high = column[finite].min(), column[finite].max()
        if high - low < 1e-9:
            out[finite, j] = 0.5
        else:
            out[finite, j] = (column[finite] - low) / (high - low)
    return out


_AVERAGE_COLUMNS = ("average", "avg w/o A_U, C12-C44")


@_styled
def mape_heatmap(analysis: Analysis, out_dir: Path) -> Figure | None:
    """MAPE (top) and MdAPE (bottom) per model (rows) and property (columns), annotated.

    The last two columns are the averages over properties (all, and without A_U and
    the Cauchy pressure). With two or more models each column has its own colour scale
    (log, lowest to highest among the models); with one model, one log scale.
    """
    if not analysis.models:
        return None
    metrics = {(m.model, m.property): m for m in analysis.metrics}
    averages = {a.model: a for a in analysis.averages or average_errors(analysis.metrics)}
    extra = {
        "mape_pct": ("average_mape_pct", "average_mape_without_near_zero_pct"),
        "mdape_pct": ("average_mdape_pct", "average_mdape_without_near_zero_pct"),
    }

    def table(field: str) -> np.ndarray:
        return np.array(
            [
                [getattr(metrics[(model, p.key)], field) for p in PROPERTIES]
                + [getattr(averages[model], name) for name in extra[field]]
                for model in analysis.models
            ],
            dtype=np.float64,
        )

    columns = [p.label for p in PROPERTIES] + list(_AVERAGE_COLUMNS)
    n_models = len(analysis.models)
    panel, gap, below, above = 0.45 * n_models + 0.3, 1.3, 1.05, 0.35  # inches
    chars = _chars(analysis.models)
    fig = MplFigure(
        figsize=(0.95 * len(columns) + 1.9 + 0.085 * chars, 2 * panel + gap + below + above)
    )
    top, bottom = fig.subplots(2, 1)
    _margins(fig, left=0.3 + 0.085 * chars, right=0.1, bottom=below, top=above, hspace=gap / panel)
    for ax, field, name in ((top, "mape_pct", "MAPE"), (bottom, "mdape_pct", "MdAPE")):
        values = table(field)
        labels = np.vectorize(_percent_label, otypes=[str])(values)
        names = (analysis.models, columns)
        if n_models >= 2:
            bar = _matrix(ax, _per_column(values), labels, names, "viridis_r", (0.0, 1.0))
            bar.set_ticks([0.0, 1.0], labels=["lowest", "highest"])
            bar.set_label("per column (log)")
        else:
            positive = values[np.isfinite(values) & (values > 0)]
            low, high = (positive.min(), positive.max()) if len(positive) else (1.0, 10.0)
            norm = LogNorm(vmin=low, vmax=max(high, low * 1.01))
            shown = np.where(np.isfinite(values), np.maximum(values, low), np.nan)
            bar = _matrix(ax, shown, labels, names, "viridis_r", norm=norm)
            bar.set_label("% (log scale)")
        ax.axvline(len(PROPERTIES) - 0.5, color="white", lw=3)
        ax.set_title(f"{name} (%) vs DFT")
    files = save(fig, out_dir, "mape_heatmap")
    scale = (
        "Each column has its own colour scale (log), from the lowest (light) to the highest "
        "(dark) value among the models, so colours compare models within a property only"
        if n_models >= 2
        else "Colours follow one log scale"
    )
    near_zero = ", ".join(p.label for p in PROPERTIES if p.key in NEAR_ZERO_PROPERTIES)
    return Figure(
        "mape_heatmap",
        "MAPE and MdAPE heat maps",
        "Mean (top) and median (bottom) absolute percentage error (%) per model and "
        "property, every cell annotated with its value; the last two columns are the plain "
        f"means over the properties, with all of them and without {near_zero} (DFT values "
        f"near zero, huge percentages). {scale}. '-' where there is no reference value or "
        "no pair with |DFT| >= epsilon.",
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


@_styled
def stability_confusion(analysis: Analysis, out_dir: Path) -> Figure | None:
    """Per model, the 2x2 confusion matrix of its Born-stability calls against DFT's."""
    if not analysis.stability:
        return None
    rows = analysis.stability
    fig, axes = _new(len(rows), ncols=4, size=2.6, label_chars=14)
    _margins(fig, left=1.0, bottom=0.95, wspace=0.75, hspace=0.8)
    states = ["stable", "unstable"]
    for ax, row in zip(axes, rows, strict=True):
        counts = np.array([[row.tp, row.fn], [row.fp, row.tn]], dtype=np.float64)
        roles = np.array([["tp", "fn"], ["fp", "tn"]])
        labels = np.array(
            [[f"{int(counts[i, j])}\n({roles[i, j]})" for j in range(2)] for i in range(2)]
        )
        _matrix(ax, counts, labels, (states, states), "Blues", (0.0, max(row.n, 1)), colorbar=False)
        accuracy = f"{row.accuracy:.2f}" if math.isfinite(row.accuracy) else "-"
        ax.set_title(row.model)
        ax.set_xlabel(f"model call\naccuracy {accuracy} (n={row.n})")
        ax.set_ylabel("DFT call")
    files = save(fig, out_dir, "stability_confusion")
    return Figure(
        "stability_confusion",
        "Stability confusion matrices",
        "Per model, materials by DFT's Born-stability call (rows) and the model's "
        "(columns), over the materials with both calls; positive class = stable (tp: "
        "stable by both, fn: model unstable and DFT stable, fp: model stable and DFT "
        "unstable, tn: unstable by both); accuracy = (tp + tn) / n.",
        files,
    )


def draw_all(analysis: Analysis, out_dir: Path) -> list[Figure]:
    """Draws and saves every figure of the report; returns those drawn, in page order."""
    figures = [mape_heatmap(analysis, out_dir)]
    figures += [parity(analysis, prop, out_dir) for prop in PROPERTIES]
    figures += [
        violins(analysis, out_dir),
        relative_error_boxes(analysis, out_dir),
        stability_confusion(analysis, out_dir),
        agreement_matrix(analysis, out_dir),
        timing(analysis, out_dir),
    ]
    return [f for f in figures if f is not None]
