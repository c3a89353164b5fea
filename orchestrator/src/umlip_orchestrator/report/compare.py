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

Protocol sensitivity (SCIENCE.md §6; no reference needed): the workflow settings in which
the runs differ (from each run's ``manifest.json``, performance-only keys left out), and
per model pair and property, over the materials both runs computed, how many move by more
than :data:`SHIFT_THRESHOLD` (relative to run A) and the median signed shift; written as
``sensitivity.parquet``. When the settings are the same, the shifts measure run-to-run
noise. Materials whose tensor depends on the strain magnitudes (``max_strain_dependence_pct``
above :data:`~umlip_orchestrator.elastic.fit.STRAIN_DEPENDENCE_FLAG_PCT`) are listed in
``strain_flags.parquet``. Without a reference (no ``--reference`` and no reference K and
G in the rows) only this part is written.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from umlip_orchestrator.elastic.fit import STRAIN_DEPENDENCE_FLAG_PCT
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
from umlip_orchestrator.report.provenance import result_settings
from umlip_orchestrator.report.spec import PROPERTIES, epsilons
from umlip_orchestrator.report.study import load_study, published_finetuning_tables

NAN = math.nan
#: The group of every material.
ALL = "all"
#: A value moves when |B - A| / |A| exceeds this (protocol sensitivity).
SHIFT_THRESHOLD = 0.05
#: Column of the results table holding the strain-linearity diagnostic (absent in old runs).
STRAIN_DEPENDENCE_COLUMN = "max_strain_dependence_pct"


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


@dataclass(frozen=True, kw_only=True)
class SensitivityRow:
    """One property and model pair: how far run B's values move from run A's.

    Over ``n_common`` materials with status ok and a finite value in both runs;
    ``n_relative`` of them have |A| >= ``epsilon`` (the property's zero threshold).
    ``n_moved``: materials with |B - A| / |A| > ``threshold_pct`` / 100 (of
    ``n_relative``); ``median_shift_pct``: median of 100 (B - A) / |A| over
    ``n_relative``; ``median_shift``: median of B - A over ``n_common``, in ``unit``.
    ``settings_changed``: the workflow settings that differ (``key: A -> B; ...``).
    """

    model_a: str
    model_b: str
    property: str
    label: str
    unit: str
    n_common: int
    n_relative: int
    n_moved: int
    moved_pct: float
    median_shift_pct: float
    median_shift: float
    threshold_pct: float
    epsilon: float
    settings_changed: str


@dataclass(frozen=True, kw_only=True)
class StrainFlagRow:
    """A result whose tensor depends on the strain magnitudes used (max_strain_dependence_pct
    above the flag threshold), in run A or B."""

    run: str
    model: str
    material_id: str
    max_strain_dependence_pct: float
    threshold_pct: float


@dataclass(frozen=True)
class SettingChange:
    """One flattened workflow setting that differs between run A and run B (``None``:
    not recorded in that run)."""

    key: str
    value_a: Any
    value_b: Any

    def text(self) -> str:
        """``key: A -> B``."""
        return f"{self.key}: {_setting_text(self.value_a)} -> {_setting_text(self.value_b)}"


def _setting_text(value: Any) -> str:
    if value is None:
        return "(not recorded)"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def run_workflow(run_dir: Path) -> tuple[dict[str, str] | None, list[str]]:
    """The workflow settings of a run (its latest manifest entry), flattened and without
    the performance-only keys (:func:`~.provenance.result_settings`), with notes.

    Returns ``(None, [why])`` when the manifest is missing, unreadable or records none.
    """
    path = Path(run_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return None, [f"no readable {path} ({type(error).__name__}): settings unknown"]
    runs = manifest.get("runs", []) if isinstance(manifest, dict) else []
    workflows = [
        result_settings(r["workflow"])
        for r in runs
        if isinstance(r, dict) and isinstance(r.get("workflow"), dict)
    ]
    if not workflows:
        return None, [f"{path} records no workflow settings: settings unknown"]
    notes = []
    if any(w != workflows[-1] for w in workflows):
        notes.append(
            f"{path} records runs with different settings into the same folder; the latest is used"
        )
    return workflows[-1], notes


def settings_diff(
    settings_a: Mapping[str, str] | None, settings_b: Mapping[str, str] | None
) -> list[SettingChange]:
    """The settings (as :func:`run_workflow` returns them) that differ between two runs."""
    a, b = settings_a or {}, settings_b or {}
    return [
        SettingChange(key, a.get(key), b.get(key))
        for key in sorted(a.keys() | b.keys())
        if a.get(key) != b.get(key)
    ]


def checkpoint_diff(
    services_a: Mapping[str, Any], services_b: Mapping[str, Any], paired: Sequence[tuple[str, str]]
) -> list[SettingChange]:
    """Per model pair, the recorded checkpoint hash when it differs between the runs."""
    changes = []
    for model_a, model_b in paired:
        sha = [
            (services.get(model) or {}).get("checkpoint_sha256")
            for services, model in ((services_a, model_a), (services_b, model_b))
        ]
        if sha[0] != sha[1] and (sha[0] or sha[1]):
            name = model_a if model_a == model_b else f"{model_a} -> {model_b}"
            changes.append(SettingChange(f"checkpoint_sha256 ({name})", sha[0], sha[1]))
    return changes


def _read_values(run_dir: Path) -> tuple[dict[tuple[str, str], dict[str, float]], bool]:
    """(model, property key) -> material id -> value of the ok rows (finite or not), and
    whether the run has the strain-dependence column; property columns that are missing
    give no values."""
    path = Path(run_dir) / "results.parquet"
    try:
        names = set(pq.read_schema(path).names)
        wanted = ["material_id", "model", "status", *(p.column for p in PROPERTIES)]
        wanted.append(STRAIN_DEPENDENCE_COLUMN)
        rows = pq.read_table(path, columns=[c for c in wanted if c in names]).to_pylist()
    except Exception as error:  # pyarrow raises several types on corrupt files
        raise ReportError(f"unreadable {path}: {type(error).__name__}: {error}") from None
    values: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        keys = [(p.key, p.column) for p in PROPERTIES]
        keys.append((STRAIN_DEPENDENCE_COLUMN, STRAIN_DEPENDENCE_COLUMN))
        for key, column in keys:
            value = row.get(column)
            values.setdefault((str(row["model"]), key), {})[str(row["material_id"])] = (
                NAN if value is None else float(value)
            )
    return values, STRAIN_DEPENDENCE_COLUMN in names


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else NAN


def sensitivity(
    run_a: Path,
    run_b: Path,
    paired: Sequence[tuple[str, str]],
    epsilon: Mapping[str, float] | None = None,
    changed: Sequence[SettingChange] = (),
) -> tuple[list[SensitivityRow], list[StrainFlagRow], list[str]]:
    """Per model pair and property, how many materials move from run A to run B, the
    strain-dependence flags of both runs, and notes (runs without the diagnostic)."""
    eps = epsilons(epsilon)
    (values_a, has_a), (values_b, has_b) = _read_values(run_a), _read_values(run_b)
    changed_text = "; ".join(c.text() for c in changed)
    rows = []
    for (model_a, model_b), prop in itertools.product(paired, PROPERTIES):
        va = values_a.get((model_a, prop.key), {})
        vb = values_b.get((model_b, prop.key), {})
        common = sorted(
            m for m in va.keys() & vb.keys() if math.isfinite(va[m]) and math.isfinite(vb[m])
        )
        relative = [m for m in common if abs(va[m]) >= eps[prop.key] and va[m] != 0.0]
        shifts_pct = [100.0 * (vb[m] - va[m]) / abs(va[m]) for m in relative]
        moved = sum(1 for s in shifts_pct if abs(s) > 100.0 * SHIFT_THRESHOLD)
        rows.append(
            SensitivityRow(
                model_a=model_a,
                model_b=model_b,
                property=prop.key,
                label=prop.label,
                unit=prop.unit,
                n_common=len(common),
                n_relative=len(relative),
                n_moved=moved,
                moved_pct=100.0 * moved / len(relative) if relative else NAN,
                median_shift_pct=_median(shifts_pct),
                median_shift=_median([vb[m] - va[m] for m in common]),
                threshold_pct=100.0 * SHIFT_THRESHOLD,
                epsilon=eps[prop.key],
                settings_changed=changed_text,
            )
        )
    flags, notes = [], []
    for run, values, has, models in (
        ("A", values_a, has_a, [a for a, _ in paired]),
        ("B", values_b, has_b, [b for _, b in paired]),
    ):
        if not has:
            notes.append(
                f"run {run} has no {STRAIN_DEPENDENCE_COLUMN} column (written before the "
                "strain-linearity diagnostic existed): no strain-dependence flags for it"
            )
        for model in dict.fromkeys(models):
            for material, value in sorted(
                values.get((model, STRAIN_DEPENDENCE_COLUMN), {}).items()
            ):
                if value > STRAIN_DEPENDENCE_FLAG_PCT:
                    flags.append(
                        StrainFlagRow(
                            run=run,
                            model=model,
                            material_id=material,
                            max_strain_dependence_pct=value,
                            threshold_pct=STRAIN_DEPENDENCE_FLAG_PCT,
                        )
                    )
    return rows, flags, notes


_SENSITIVITY_COLUMNS = (
    "model", "property", "n_common", "n_relative", "n_moved", "median_shift_pct",
    "median_shift",
)  # fmt: skip


def sensitivity_markdown(
    rows: Sequence[SensitivityRow],
    flags: Sequence[StrainFlagRow],
    changed: Sequence[SettingChange],
    notes: Sequence[str],
    settings_known: bool,
) -> str:
    """The "Protocol sensitivity" section of ``compare.md``."""
    if changed:
        intro = "The runs differ in these settings (run A -> run B):\n\n" + "".join(
            f"- `{c.key}`: {_setting_text(c.value_a)} -> {_setting_text(c.value_b)}\n"
            for c in changed
        )
    elif settings_known:
        intro = (
            "The runs' workflow settings are identical: the shifts below measure "
            "run-to-run noise, not a protocol change.\n"
        )
    else:
        intro = "The runs' settings could not be compared (see the notes).\n"
    threshold = format_value(100.0 * SHIFT_THRESHOLD)
    cells = [
        [
            r.model_a if r.model_a == r.model_b else f"{r.model_a} -> {r.model_b}",
            r.label,
            str(r.n_common),
            str(r.n_relative),
            str(r.n_moved),
            format_value(r.median_shift_pct),
            format_value(r.median_shift) + (f" {r.unit}" if r.unit else ""),
        ]
        for r in rows
    ]
    header = list(_SENSITIVITY_COLUMNS)
    header[4] = f"n_moved (> {threshold} %)"
    header[5] = "median shift (%)"
    header[6] = "median shift"
    flag_text = (
        grid_markdown(
            ["run", "model", "material_id", "max_strain_dependence_pct"],
            [
                [f.run, f.model, f.material_id, format_value(f.max_strain_dependence_pct)]
                for f in flags
            ],
        )
        if flags
        else "None."
    )
    return (
        "## Protocol sensitivity\n\n"
        + intro
        + "".join(f"\nNote: {n}\n" for n in notes)
        + f"\nPer model and property, over the materials both runs computed (`n_common`): "
        f"`n_moved` materials whose value moves by more than {threshold} % of run A's "
        "(over the `n_relative` with |A| >= the property's epsilon), the median signed shift "
        "100 (B - A) / |A| (%) and the median of B - A (property unit). Table: "
        "`sensitivity.parquet`.\n\n"
        + grid_markdown(header, cells)
        + "\n\n### Strain-dependent tensors\n\n"
        + f"Results whose tensor changes by more than {format_value(STRAIN_DEPENDENCE_FLAG_PCT)} "
        "% (`max_strain_dependence_pct`: the smallest strains alone vs all strains; "
        "`strain_flags.parquet`):\n\n" + flag_text + "\n"
    )


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


#: How the published column of Tables I and II is headed.
STUDY_LABEL = "Gao & Wang 2025"


def study_tables(changes: Sequence[PropertyChange]) -> str:
    """The study's Table I (relative MAPE change, %) and Table II (IQR of the relative
    error before -> after, %) per model pair, one column per group, as Markdown; for a
    model the study fine-tuned, its published values in a last column."""
    study = load_study()
    by = {(c.model_a, c.model_b, c.group, c.property): c for c in changes}
    present = list(dict.fromkeys(c.group for c in changes))
    columns = [g for g in STUDY_GROUPS if g in present] or [ALL]
    parts = []
    for ma, mb in dict.fromkeys((c.model_a, c.model_b) for c in changes):

        def cell(group: str, key: str, text: Callable[[PropertyChange], str]) -> str:
            change = by.get((ma, mb, group, key))  # noqa: B023 - used within the loop
            return "-" if change is None or change.n_common == 0 else text(change)

        published = {row[0]: row[1:] for row in published_finetuning_tables(study, ma)}
        extra = [f"published ({STUDY_LABEL})"] if published else []
        header = ["property", *(f"{g} (n)" for g in columns), *extra]

        def study_cell(
            label: str, column: int, published: dict[str, tuple[str, str]] = published
        ) -> list[str]:
            return [published.get(label, ("-", "-"))[column]] if published else []

        table_1 = [
            [p.label, *(cell(g, p.key, lambda c: f"{format_value(c.mape_change_pct)} "
                             f"({c.n_common})") for g in columns), *study_cell(p.label, 0)]
            for p in PROPERTIES
        ]  # fmt: skip
        table_2 = [
            [p.label, *(cell(g, p.key, lambda c: f"{format_value(c.iqr_a_pct)} -> "
                             f"{format_value(c.iqr_b_pct)}") for g in columns),
             *study_cell(p.label, 1)]
            for p in PROPERTIES
        ]  # fmt: skip
        note = (
            f" The last column is the study's published value for {ma} (its 185 "
            "worst-predicted materials, its own DFT labels and checkpoint): ours is for "
            "the checkpoints named above."
            if published
            else ""
        )
        parts.append(
            f"### {ma} -> {mb}\n\nTable I: relative MAPE change 100 (MAPE_after - "
            "MAPE_before) / MAPE_before, % (negative: better), with the number of "
            f"materials.{note}\n\n" + grid_markdown(header, table_1) + "\n\nTable II: IQR of "
            "the signed relative error, before -> after, %.\n\n" + grid_markdown(header, table_2)
        )
    return "\n\n".join(parts)


@dataclass(frozen=True)
class Comparison:
    """What ``build_comparison`` computed and wrote."""

    changes: list[PropertyChange]
    files: list[Path]
    tables: str
    provenance: list[str]
    sensitivity: list[SensitivityRow] = field(default_factory=list)
    settings_changed: list[SettingChange] = field(default_factory=list)
    strain_flags: list[StrainFlagRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_comparison(
    run_a: Path,
    run_b: Path,
    out_dir: Path,
    reference_paths: Sequence[Path] = (),
    pairs: Mapping[str, str] | None = None,
    epsilon: Mapping[str, float] | None = None,
    selection: Mapping[str, Any] | None = None,
) -> Comparison:
    """Compares two runs against one reference and with each other; writes
    ``compare.parquet``, ``sensitivity.parquet``, ``strain_flags.parquet``, ``compare.md``
    and ``figures/compare.{png,svg}`` under ``out_dir``.

    Without ``reference_paths`` each run uses the K and G stored in its own results rows;
    when a run has none, the DFT part is left out (``compare.parquet`` is empty, no
    figure) and only the protocol sensitivity is reported.
    ``selection`` (a ``selection.json`` record) or a fine-tuned model's provenance in
    run B's manifest adds the trained / held-out / forgetting groups.

    Raises:
        ReportError: A run or the reference is missing or unreadable, or models cannot be
            paired.
    """
    epsilons(epsilon)  # a bad threshold fails before anything is read
    rows_a, rows_b = read_results(run_a), read_results(run_b)
    notes: list[str] = []
    analyses: tuple[Analysis, Analysis] | None = None
    if reference_paths:
        reference = load_references(reference_paths)
        ref_a = ref_b = reference
    else:
        try:
            ref_a, ref_b = (
                default_reference(rows_a, Path(run_a)),
                default_reference(rows_b, Path(run_b)),
            )
        except ReportError as error:
            notes.append(f"no DFT comparison: {error}")
            ref_a = ref_b = None
    if ref_a is not None and ref_b is not None:
        analyses = (analyse(rows_a, ref_a, epsilon), analyse(rows_b, ref_b, epsilon))
    services_a, services_b = run_services(Path(run_a)), run_services(Path(run_b))
    models_a = tuple(sorted({str(r["model"]) for r in rows_a}))
    models_b = tuple(sorted({str(r["model"]) for r in rows_b}))
    paired = pair_models(models_a, models_b, pairs)
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
    changes = (
        compare_analyses(analyses[0], analyses[1], dict(paired), epsilon, groups)
        if analyses
        else []
    )
    (workflow_a, notes_a), (workflow_b, notes_b) = run_workflow(run_a), run_workflow(run_b)
    notes += [f"run A: {n}" for n in notes_a] + [f"run B: {n}" for n in notes_b]
    settings_known = workflow_a is not None and workflow_b is not None
    changed = settings_diff(workflow_a, workflow_b) if settings_known else []
    changed += checkpoint_diff(services_a, services_b, paired)
    shifts, flags, flag_notes = sensitivity(run_a, run_b, paired, epsilon, changed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = write_parquet(out_dir / "compare.parquet", changes, PropertyChange)
    shift_table = write_parquet(out_dir / "sensitivity.parquet", shifts, SensitivityRow)
    flag_table = write_parquet(out_dir / "strain_flags.parquet", flags, StrainFlagRow)
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
    sensitivity_text = sensitivity_markdown(shifts, flags, changed, flag_notes, settings_known)
    head = (
        f"# umlip compare\n\nRun A (before): `{run_a}`\n\nRun B (after): `{run_b}`\n\n"
        + (f"Reference: {ref_a.name}.\n\n" if analyses and ref_a is not None else "")
        + "".join(f"- {line}\n" for line in provenance)
        + ("\n" if provenance else "")
        + "".join(f"Note: {n}\n\n" for n in notes)
    )
    if analyses:
        text = (
            head + groups_text + "Per property, over the materials where both runs have a finite "
            "value: MAPE (%), relative MAPE change 100 (MAPE_B - MAPE_A) / MAPE_A (negative: "
            "B is better), and the IQR of the signed relative error (%), whose change is in "
            "percentage points. See docs/report.md.\n\n## The study's tables\n\n"
            + tables
            + "\n\n## Every change\n\n"
            + grid_markdown(_MD_COLUMNS, cells)
            + "\n\n![MAPE and IQR change](figures/compare.png)\n\n"
            + sensitivity_text
        )
        figures = list(_figure(changes, out_dir))
    else:
        text = head + sensitivity_text
        figures = []
    summary = out_dir / "compare.md"
    summary.write_text(text, encoding="utf-8")
    return Comparison(
        changes,
        [table, summary, shift_table, flag_table, *figures],
        tables,
        provenance,
        sensitivity=shifts,
        settings_changed=changed,
        strain_flags=flags,
        notes=notes + flag_notes,
    )
