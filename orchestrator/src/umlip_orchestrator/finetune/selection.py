"""``umlip finetune select``: the worst materials of a run and their strained cells.

SCIENCE.md §5 steps 1-2. Materials are ranked by the relative error of a property
against the DFT reference (default: the mean of the K_VRH and G_VRH relative errors);
the N worst are split into materials to train on and held-out materials (the latter get
no configurations, so a later ``umlip compare`` can tell in-sample from held-out). Each
training material's configurations are rebuilt from the run's own tables: the relaxed
cell, its deformed cells (the same deformation gradients the workflow applied), in
relaxed-ion runs the relaxed ions in each deformed cell, and optional rattled copies.

Written under ``out_dir``: ``configurations.xyz`` (extended XYZ, no labels),
``poscar/<config_id>/POSCAR`` (one folder per configuration, for a DFT code) and
``selection.json`` (materials, their errors and roles, and every configuration with its
material, deformation and strain).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.parquet as pq
import scipy.linalg
from ase import Atoms
from ase.io import write

from umlip_orchestrator.report import ReportError
from umlip_orchestrator.report.analysis import analyse, read_results
from umlip_orchestrator.report.build import default_reference, load_references
from umlip_orchestrator.report.io import run_services
from umlip_orchestrator.report.spec import PROPERTY_BY_KEY

#: ``--by`` value for the mean of the K_VRH and G_VRH relative errors (the default).
MEAN_K_G = "k_g_mean"
SELECTION_FILE = "selection.json"
CONFIGURATIONS_FILE = "configurations.xyz"
SELECTION_KIND = "umlip-finetune-selection"
#: Relaxed-ion frames closer than this to the homogeneously deformed cell are not
#: exported twice (Å).
SAME_FRAME_TOL_A = 1e-6

ConfigKind = Literal["relaxed", "deformed", "deformed-relaxed-ions", "rattled"]


class SelectionError(ValueError):
    """The run cannot be selected from as asked; the message says why."""


@dataclass(frozen=True, kw_only=True)
class SelectionSettings:
    """How materials are picked and which configurations are exported.

    Attributes:
        model: model (as named in the run's tables) whose errors rank the materials.
        worst: how many of the worst materials to pick.
        by: a property key (``k_vrh``, ``g_vrh``, ``pugh_ratio``, ...) or ``k_g_mean``.
        hold_out: share of the picked materials held out of training (0 keeps none).
        rattle: rattled copies per deformed cell (0: none).
        rattle_stdev_a: standard deviation of the rattle displacements, Å.
        seed: random seed of the hold-out split and of the rattles.
    """

    model: str
    worst: int
    by: str = MEAN_K_G
    hold_out: float = 0.25
    rattle: int = 0
    rattle_stdev_a: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if self.worst < 1:
            raise SelectionError("--worst must be >= 1")
        if self.by != MEAN_K_G and self.by not in PROPERTY_BY_KEY:
            known = ", ".join([MEAN_K_G, *PROPERTY_BY_KEY])
            raise SelectionError(f"--by {self.by!r} is not a property; known: {known}")
        if not 0 <= self.hold_out < 1:
            raise SelectionError("--hold-out must be in [0, 1)")
        if self.rattle < 0 or not self.rattle_stdev_a > 0:
            raise SelectionError("--rattle must be >= 0 and --rattle-stdev > 0")


@dataclass(frozen=True, kw_only=True)
class RankedMaterial:
    """One picked material: its error and whether it is trained on or held out."""

    material_id: str
    formula: str
    relative_error_pct: float
    role: Literal["train", "held_out"]


@dataclass(frozen=True, kw_only=True)
class Configuration:
    """One exported configuration (no labels yet)."""

    config_id: str
    material_id: str
    kind: ConfigKind
    deformation_index: int | None
    component: int | None
    magnitude: float | None
    green_lagrange_strain: list[float]
    rattle_index: int | None


@dataclass(frozen=True)
class Selection:
    """What ``select`` wrote."""

    out_dir: Path
    materials: list[RankedMaterial]
    configurations: list[Configuration]
    n_ranked: int


def rank_materials(
    run_dir: Path,
    model: str,
    by: str,
    reference_paths: Sequence[Path] = (),
    epsilon: Mapping[str, float] | None = None,
) -> tuple[list[tuple[str, float]], int]:
    """Materials of ``model`` with a finite relative error, worst first.

    Returns:
        ([(material id, |relative error| in %)], number of materials without one).

    Raises:
        SelectionError: the model is not in the run.
        ReportError: the run or the reference cannot be read.
    """
    rows = read_results(run_dir)
    models = sorted({str(r["model"]) for r in rows})
    if model not in models:
        raise SelectionError(f"model {model!r} is not in {run_dir} (it has {models})")
    reference = load_references(reference_paths) if reference_paths else None
    analysis = analyse(rows, reference or default_reference(rows, Path(run_dir)), epsilon)
    keys = ("k_vrh", "g_vrh") if by == MEAN_K_G else (by,)
    errors: dict[str, list[float]] = {}
    for pair in analysis.pairs:
        if pair.model == model and pair.property in keys:
            errors.setdefault(pair.material_id, []).append(abs(pair.relative_error_pct))
    ranked = [
        (material_id, float(np.mean(values)))
        for material_id, values in errors.items()
        if len(values) == len(keys) and all(math.isfinite(v) for v in values)
    ]
    ranked.sort(key=lambda item: (-item[1], item[0]))
    n_model_rows = sum(1 for r in rows if r["model"] == model)
    return ranked, n_model_rows - len(ranked)


def _table_rows(path: Path, model: str, ids: set[str], columns: Sequence[str]) -> list[dict]:
    """Rows of a Parquet table for ``model`` and ``ids`` (missing columns read as None)."""
    if not path.is_file():
        raise SelectionError(f"{path} is missing (is it a complete umlip run?)")
    if not ids:
        return []
    present = set(pq.read_schema(path).names)
    table = pq.read_table(
        path,
        columns=[c for c in columns if c in present],
        filters=[("model", "==", model), ("material_id", "in", sorted(ids))],
    )
    return [{c: row.get(c) for c in columns} for row in table.to_pylist()]


def _safe(text: str) -> str:
    """A string usable as one folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def gradient_of(green_lagrange_strain: Sequence[float]) -> np.ndarray:
    """The workflow's deformation gradient of a stored Green-Lagrange strain.

    Both strain conventions of :mod:`umlip_orchestrator.elastic.strains` build an upper
    triangular F with a positive diagonal, which the upper Cholesky factor of I + 2E
    recovers exactly (F^T F = I + 2E).
    """
    strain = np.reshape(np.asarray(green_lagrange_strain, dtype=float), (3, 3))
    return scipy.linalg.cholesky(np.eye(3) + 2.0 * strain, lower=False)


def material_configurations(
    material_id: str,
    result_row: Mapping[str, Any],
    stress_rows: Sequence[Mapping[str, Any]],
    settings: SelectionSettings,
    rng: np.random.Generator,
) -> list[tuple[Configuration, Atoms]]:
    """The relaxed cell, each deformed cell, the relaxed-ion frames and rattled copies."""
    numbers = list(result_row["atomic_numbers"])
    relaxed = Atoms(
        numbers=numbers,
        positions=np.reshape(result_row["relaxed_positions_a"], (-1, 3)),
        cell=np.reshape(result_row["relaxed_cell_a"], (3, 3)),
        pbc=True,
    )
    stem = _safe(material_id)
    zero = np.zeros(9).tolist()
    out = [(Configuration(config_id=f"{stem}-relaxed", material_id=material_id,
                          kind="relaxed", deformation_index=None, component=None,
                          magnitude=None, green_lagrange_strain=zero, rattle_index=None),
            relaxed)]  # fmt: skip
    for row in sorted(stress_rows, key=lambda r: r["index"]):
        if row["stress_gpa"] is None:
            continue  # the workflow could not evaluate this cell: nothing to learn from it
        strain = list(row["green_lagrange_strain"])
        deformed = relaxed.copy()
        deformed.set_cell(relaxed.cell.array @ gradient_of(strain).T, scale_atoms=True)
        common = {
            "material_id": material_id,
            "deformation_index": int(row["index"]),
            "component": int(row["component"]),
            "magnitude": float(row["magnitude"]),
            "green_lagrange_strain": strain,
        }
        tag = f"{stem}-d{int(row['index']):02d}"
        out.append(
            (Configuration(config_id=tag, kind="deformed", rattle_index=None, **common), deformed)
        )
        ions = row.get("deformed_positions_a")
        if ions is not None:
            moved = deformed.copy()
            moved.positions = np.reshape(ions, (-1, 3))
            if np.abs(moved.positions - deformed.positions).max() > SAME_FRAME_TOL_A:
                out.append(
                    (
                        Configuration(
                            config_id=f"{tag}-ions",
                            kind="deformed-relaxed-ions",
                            rattle_index=None,
                            **common,
                        ),
                        moved,
                    )
                )
        for k in range(settings.rattle):
            rattled = deformed.copy()
            rattled.positions += rng.normal(scale=settings.rattle_stdev_a, size=(len(numbers), 3))
            out.append(
                (
                    Configuration(
                        config_id=f"{tag}-r{k}", kind="rattled", rattle_index=k, **common
                    ),
                    rattled,
                )
            )
    return out


def select_configurations(
    run_dir: Path,
    out_dir: Path,
    settings: SelectionSettings,
    reference_paths: Sequence[Path] = (),
    epsilon: Mapping[str, float] | None = None,
) -> Selection:
    """Ranks, picks and exports (see the module docstring).

    Raises:
        SelectionError: the model is not in the run, or no material has an error.
        ReportError: the run or the reference cannot be read.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    ranked, n_without = rank_materials(
        run_dir, settings.model, settings.by, reference_paths, epsilon
    )
    if not ranked:
        raise SelectionError(
            f"no material of {settings.model} has a finite relative error of {settings.by} "
            f"({n_without} rows without one: failed, or no DFT reference)"
        )
    picked = ranked[: settings.worst]
    rng = np.random.default_rng(settings.seed)
    n_held = math.floor(settings.hold_out * len(picked)) if len(picked) > 1 else 0
    held = {picked[i][0] for i in rng.permutation(len(picked))[:n_held].tolist()}
    ids = {m for m, _ in picked}
    results = {
        r["material_id"]: r
        for r in _table_rows(
            run_dir / "results.parquet",
            settings.model,
            ids,
            ("material_id", "model", "formula", "atomic_numbers", "relaxed_cell_a",
             "relaxed_positions_a"),
        )
    }  # fmt: skip
    stresses = _table_rows(
        run_dir / "stresses.parquet",
        settings.model,
        ids - held,
        ("material_id", "model", "index", "component", "magnitude", "green_lagrange_strain",
         "stress_gpa", "deformed_positions_a"),
    )  # fmt: skip
    materials = [
        RankedMaterial(
            material_id=m,
            formula=str(results[m]["formula"]),
            relative_error_pct=error,
            role="held_out" if m in held else "train",
        )
        for m, error in picked
    ]
    frames: list[tuple[Configuration, Atoms]] = []
    for material in materials:
        if material.role == "train":
            rows = [r for r in stresses if r["material_id"] == material.material_id]
            frames += material_configurations(
                material.material_id, results[material.material_id], rows, settings, rng
            )
    _write(run_dir, out_dir, settings, materials, frames, len(ranked), n_without)
    return Selection(out_dir, materials, [c for c, _ in frames], len(ranked))


def _write(
    run_dir: Path,
    out_dir: Path,
    settings: SelectionSettings,
    materials: list[RankedMaterial],
    frames: list[tuple[Configuration, Atoms]],
    n_ranked: int,
    n_without: int,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tagged = []
    for config, atoms in frames:
        frame = atoms.copy()
        frame.info.update({"config_id": config.config_id, "material_id": config.material_id,
                           "kind": config.kind})  # fmt: skip
        tagged.append(frame)
        folder = out_dir / "poscar" / config.config_id
        folder.mkdir(parents=True, exist_ok=True)
        write(folder / "POSCAR", atoms, format="vasp", direct=True)
    write(out_dir / CONFIGURATIONS_FILE, tagged, format="extxyz")
    services = run_services(run_dir)
    record = {
        "kind": SELECTION_KIND,
        "run": str(run_dir.resolve()),
        "model": settings.model,
        "model_service": services.get(settings.model, {}),
        "settings": asdict(settings),
        "n_ranked": n_ranked,
        "n_without_error": n_without,
        "materials": [asdict(m) for m in materials],
        "train_materials": [m.material_id for m in materials if m.role == "train"],
        "held_out_materials": [m.material_id for m in materials if m.role == "held_out"],
        "configurations": [asdict(c) for c, _ in frames],
    }
    (out_dir / SELECTION_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_selection(directory: Path) -> dict[str, Any]:
    """The ``selection.json`` of a ``select`` output folder.

    Raises:
        SelectionError: missing or not a selection record.
    """
    path = Path(directory) / SELECTION_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SelectionError(
            f"{path} is missing or unreadable (run `umlip finetune select` first): {error}"
        ) from error
    if not isinstance(record, dict) or record.get("kind") != SELECTION_KIND:
        raise SelectionError(f"{path} is not a umlip selection record")
    return record


__all__ = [
    "MEAN_K_G",
    "Configuration",
    "RankedMaterial",
    "ReportError",
    "Selection",
    "SelectionError",
    "SelectionSettings",
    "read_selection",
    "select_configurations",
]
