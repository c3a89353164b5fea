"""``umlip compare``: how MAPE and the relative-error IQR change from run A to run B.

SCIENCE.md §5: per property, the relative MAPE change (MAPE_B - MAPE_A) / MAPE_A and
the IQR of the relative error before and after. Both runs are compared with the same
reference, over the same materials: for each property, those where both runs have a
finite value (a fine-tuned model that fails on a material does not make the
comparison look better by dropping it; its failures are counted instead).

Models are paired by name; a model of run A is paired with its fine-tuned versions in
run B (``<model>-ft-<sha8>``); when each run has exactly one model, those two are paired
whatever their names; ``pairs`` overrides.

Groups (the study's in-sample view kept apart from what it did not measure): with a
``umlip finetune select`` folder, or a fine-tuned model whose provenance lists its
training materials, each change is also computed over the materials trained on
(``trained``), the picked but untrained materials (``held_out``) and every other
material of both runs (``forgetting``: unrelated materials, where a fine-tuned model can
only get worse by forgetting); ``all`` is always there.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from umlip_orchestrator.report.analysis import Analysis, analyse, read_results
from umlip_orchestrator.report.build import default_reference, load_references
from umlip_orchestrator.report.errors import ReportError
from umlip_orchestrator.report.io import (
    format_value,
    grid_markdown,
    provenance_lines,
    run_services,
    write_parquet,
)
from umlip_orchestrator.report.metrics import error_stats, relative_change
from umlip_orchestrator.report.spec import PROPERTIES, epsilons

NAN = math.nan
#: The group of every material.
ALL = "all"


@dataclass(frozen=True, kw_only=True)
class PropertyChange:
    """One property and model pair: run A against run B over their common materials.

    ``mape_change_pct`` = 100 (MAPE_B - MAPE_A) / MAPE_A (negative: B is better);
    ``iqr_change_pct`` = IQR_B - IQR_A, in percentage points.
    """

    model_a: str
    model_b: str
    group: str
    property: str
    label: str
    n_common: int
    n_only_a: int
    n_only_b: int
    n_mape: int
    mape_a_pct: float
    mape_b_pct: float
    mape_change_pct: float
    iqr_a_pct: float
    iqr_b_pct: float
    iqr_change_pct: float
    median_a_pct: float
    median_b_pct: float


def pair_models(
    models_a: Sequence[str], models_b: Sequence[str], pairs: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """Which model of run A is compared with which of run B (see the module rules).

    Raises:
        ReportError: A named pair is not in the runs, or no model can be paired.
    """
    if pairs:
        for a, b in pairs.items():
            if a not in models_a or b not in models_b:
                raise ReportError(
                    f"cannot pair {a}={b}: run A has {list(models_a)}, run B has {list(models_b)}"
                )
        return list(pairs.items())
    common = [m for m in models_a if m in models_b]
    if common:
        return [(m, m) for m in common]
    finetuned = [(a, b) for a in models_a for b in models_b if b.startswith(f"{a}-ft-")]
    if finetuned:
        return finetuned
    if len(models_a) == 1 and len(models_b) == 1:
        return [(models_a[0], models_b[0])]
    raise ReportError(
        f"no model in common (run A: {list(models_a)}, run B: {list(models_b)}); "
        "use --pair MODEL_A=MODEL_B"
    )


def _values(analysis: Analysis) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """(model, property) -> material id -> (model value, DFT value)."""
    index: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for p in analysis.pairs:
        index.setdefault((p.model, p.property), {})[p.material_id] = (p.predicted, p.reference)
    return index


def compare_analyses(
    a: Analysis,
    b: Analysis,
    pairs: Mapping[str, str] | None = None,
    epsilon: Mapping[str, float] | None = None,
    groups: Mapping[str, Collection[str]] | None = None,
) -> list[PropertyChange]:
    """Per model pair, group and property, the change from ``a`` to ``b`` on the common
    materials (of the group; group ``all``: every material)."""
    eps = epsilons(epsilon)
    changes = []
    values_a, values_b = _values(a), _values(b)
    scopes: dict[str, Collection[str] | None] = {ALL: None, **(groups or {})}
    for (model_a, model_b), (group, members), prop in itertools.product(
        pair_models(a.models, b.models, pairs), scopes.items(), PROPERTIES
    ):
        va = values_a.get((model_a, prop.key), {})
        vb = values_b.get((model_b, prop.key), {})
        if members is not None:
            va = {m: v for m, v in va.items() if m in members}
            vb = {m: v for m, v in vb.items() if m in members}
        ok_a = {m for m, (p, _) in va.items() if math.isfinite(p)}
        ok_b = {m for m, (p, _) in vb.items() if math.isfinite(p)}
        common = sorted(ok_a & ok_b)
        ref = [va[m][1] for m in common]
        sa = error_stats([va[m][0] for m in common], ref, eps[prop.key])
        sb = error_stats([vb[m][0] for m in common], ref, eps[prop.key])
        changes.append(
            PropertyChange(
                model_a=model_a,
                model_b=model_b,
                group=group,
                property=prop.key,
                label=prop.label,
                n_common=len(common),
                n_only_a=len(ok_a - ok_b),
                n_only_b=len(ok_b - ok_a),
                n_mape=sa.n_mape,
                mape_a_pct=sa.mape_pct,
                mape_b_pct=sb.mape_pct,
                mape_change_pct=100.0 * relative_change(sa.mape_pct, sb.mape_pct),
                iqr_a_pct=sa.rel_iqr_pct,
                iqr_b_pct=sb.rel_iqr_pct,
                iqr_change_pct=sb.rel_iqr_pct - sa.rel_iqr_pct,
                median_a_pct=sa.rel_median_pct,
                median_b_pct=sb.rel_median_pct,
            )
        )
    return changes


def material_groups(
    selection: Mapping[str, Any] | None, trained: Collection[str], all_ids: Collection[str]
) -> dict[str, set[str]] | None:
    """``trained`` / ``held_out`` / ``forgetting`` material sets (see the module rules).

    Args:
        selection: a ``selection.json`` record, or None.
        trained: the materials the fine-tuned model's provenance lists (may be empty).
        all_ids: every material of both runs.
    """
    if selection is None and not trained:
        return None
    picked = {str(m["material_id"]) for m in selection["materials"]} if selection else set()
    trained_set = set(trained) or set(selection["train_materials"] if selection else ())
    return {
        "trained": trained_set,
        "held_out": picked - trained_set,
        "forgetting": set(all_ids) - picked - trained_set,
    }


def _figure(changes: Sequence[PropertyChange], out_dir: Path) -> tuple[Path, Path]:
    labels = [p.label for p in PROPERTIES]
    groups = list(dict.fromkeys((c.model_a, c.model_b, c.group) for c in changes))
    by = {(c.model_a, c.model_b, c.group, c.property): c for c in changes}
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(PROPERTIES))
    with matplotlib.rc_context({"svg.hashsalt": "umlip", "font.size": 9}):
        fig = MplFigure(figsize=(12, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2)
        for i, (ma, mb, group) in enumerate(groups):
            rows = [by[(ma, mb, group, p.key)] for p in PROPERTIES]
            name = (ma if ma == mb else f"{ma} -> {mb}") + ("" if group == ALL else f" ({group})")
            offset = x - 0.4 + width * (i + 0.5)
            left.bar(offset, np.nan_to_num([r.mape_change_pct for r in rows]), width, label=name)
            right.bar(
                offset,
                np.nan_to_num([r.iqr_a_pct for r in rows]),
                width,
                fill=False,
                edgecolor=f"C{i}",
                label=f"{name}: A",
            )
            right.bar(
                offset,
                np.nan_to_num([r.iqr_b_pct for r in rows]),
                width * 0.5,
                color=f"C{i}",
                label=f"{name}: B",
            )
        for ax, ylabel in ((left, "relative MAPE change (%)"), (right, "IQR of rel. error (%)")):
            ax.set_xticks(x, labels, rotation=30)
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7)
        left.axhline(0.0, color="0.3", lw=0.8)
        left.set_title("100 (MAPE_B - MAPE_A) / MAPE_A (negative: B better)")
        right.set_title("IQR: run A (outline) and run B (filled)")
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        paths = (out_dir / "figures" / "compare.png", out_dir / "figures" / "compare.svg")
        fig.savefig(paths[0], dpi=110)
        fig.savefig(paths[1], metadata={"Date": None})
    return paths


_MD_COLUMNS = (
    "model_a", "model_b", "group", "label", "n_common", "n_only_a", "n_only_b", "mape_a_pct",
    "mape_b_pct", "mape_change_pct", "iqr_a_pct", "iqr_b_pct", "iqr_change_pct",
)  # fmt: skip
#: The columns of the study's tables, in order.
STUDY_GROUPS = ("trained", "held_out", "forgetting")


def study_tables(changes: Sequence[PropertyChange]) -> str:
    """The study's Table I (relative MAPE change, %) and Table II (IQR of the relative
    error before -> after, %) per model pair, one column per group, as Markdown."""
    by = {(c.model_a, c.model_b, c.group, c.property): c for c in changes}
    present = list(dict.fromkeys(c.group for c in changes))
    columns = [g for g in STUDY_GROUPS if g in present] or [ALL]
    parts = []
    for ma, mb in dict.fromkeys((c.model_a, c.model_b) for c in changes):

        def cell(group: str, key: str, text: Callable[[PropertyChange], str]) -> str:
            change = by.get((ma, mb, group, key))  # noqa: B023 - used within the loop
            return "-" if change is None or change.n_common == 0 else text(change)

        header = ["property", *(f"{g} (n)" for g in columns)]
        table_1 = [
            [p.label, *(cell(g, p.key, lambda c: f"{format_value(c.mape_change_pct)} "
                             f"({c.n_common})") for g in columns)]
            for p in PROPERTIES
        ]  # fmt: skip
        table_2 = [
            [p.label, *(cell(g, p.key, lambda c: f"{format_value(c.iqr_a_pct)} -> "
                             f"{format_value(c.iqr_b_pct)}") for g in columns)]
            for p in PROPERTIES
        ]  # fmt: skip
        parts.append(
            f"### {ma} -> {mb}\n\nTable I: relative MAPE change 100 (MAPE_after - "
            "MAPE_before) / MAPE_before, % (negative: better), with the number of "
            "materials.\n\n" + grid_markdown(header, table_1) + "\n\nTable II: IQR of the "
            "signed relative error, before -> after, %.\n\n" + grid_markdown(header, table_2)
        )
    return "\n\n".join(parts)


@dataclass(frozen=True)
class Comparison:
    """What ``build_comparison`` computed and wrote."""

    changes: list[PropertyChange]
    files: list[Path]
    tables: str
    provenance: list[str]


def build_comparison(
    run_a: Path,
    run_b: Path,
    out_dir: Path,
    reference_paths: Sequence[Path] = (),
    pairs: Mapping[str, str] | None = None,
    epsilon: Mapping[str, float] | None = None,
    selection: Mapping[str, Any] | None = None,
) -> Comparison:
    """Compares two runs against one reference; writes ``compare.parquet``, ``compare.md``
    and ``figures/compare.{png,svg}`` under ``out_dir``.

    Without ``reference_paths`` each run uses the K and G stored in its own results rows.
    ``selection`` (a ``selection.json`` record) or a fine-tuned model's provenance in
    run B's manifest adds the trained / held-out / forgetting groups.

    Raises:
        ReportError: A run or the reference is missing or unreadable, or models cannot be
            paired.
    """
    epsilons(epsilon)  # a bad threshold fails before anything is read
    rows_a, rows_b = read_results(run_a), read_results(run_b)
    if reference_paths:
        reference = load_references(reference_paths)
        ref_a = ref_b = reference
    else:
        ref_a, ref_b = (
            default_reference(rows_a, Path(run_a)),
            default_reference(rows_b, Path(run_b)),
        )
    analysis_a, analysis_b = analyse(rows_a, ref_a, epsilon), analyse(rows_b, ref_b, epsilon)
    services_b = run_services(Path(run_b))
    paired = pair_models(analysis_a.models, analysis_b.models, pairs)
    trained = {
        m
        for _, mb in paired
        for m in ((services_b.get(mb) or {}).get("provenance") or {})
        .get("trained_materials", "")
        .split(",")
        if m
    }
    all_ids = {str(r["material_id"]) for r in (*rows_a, *rows_b)}
    groups = material_groups(selection, trained, all_ids)
    changes = compare_analyses(analysis_a, analysis_b, dict(paired), epsilon, groups)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = write_parquet(out_dir / "compare.parquet", changes, PropertyChange)
    cells = [[format_value(getattr(c, n)) for n in _MD_COLUMNS] for c in changes]
    tables = study_tables(changes)
    provenance = provenance_lines(services_b, [mb for _, mb in paired])
    groups_text = (
        "Groups: `trained` (materials whose configurations were trained on: the study's "
        "in-sample view), `held_out` (picked as worst but not trained on), `forgetting` "
        "(every other material of both runs).\n\n"
        if groups
        else ""
    )
    text = (
        f"# umlip compare\n\nRun A (before): `{run_a}`\n\nRun B (after): `{run_b}`\n\n"
        f"Reference: {ref_a.name}.\n\n"
        + "".join(f"- {line}\n" for line in provenance)
        + ("\n" if provenance else "")
        + groups_text
        + "Per property, over the materials where both runs have a finite "
        "value: MAPE (%), relative MAPE change 100 (MAPE_B - MAPE_A) / MAPE_A (negative: B "
        "is better), and the IQR of the signed relative error (%), whose change is in "
        "percentage points. See docs/report.md.\n\n## The study's tables\n\n"
        + tables
        + "\n\n## Every change\n\n"
        + grid_markdown(_MD_COLUMNS, cells)
        + "\n\n![MAPE and IQR change](figures/compare.png)\n"
    )
    summary = out_dir / "compare.md"
    summary.write_text(text, encoding="utf-8")
    return Comparison(changes, [table, summary, *_figure(changes, out_dir)], tables, provenance)
