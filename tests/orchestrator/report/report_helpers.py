"""Helpers of the report tests: paths of the shared DFT sets and hand-built benchmark runs.

The runs are "real-looking": rows of :class:`MaterialResult` written with
:class:`ResultStore`, whose model predictions are DFT tensors perturbed per model, with
failed and skipped rows and a model-unstable material.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from umlip_orchestrator.datasets import Material
from umlip_orchestrator.elastic import derive_properties
from umlip_orchestrator.records import DeformationRecord, MaterialResult
from umlip_orchestrator.tables import ResultStore
from umlip_orchestrator.workflow import WorkflowSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DE_JONG = SHARED_DATA / "deJong2015_mp_elastic_tensor_1181.json.gz"
MP_BINARY = SHARED_DATA / "mp-binary-pbe-elasticity-2025.1.json.gz"
N_MATERIALS = 24
#: Index (in the small reference) of the material made DFT-unstable.
UNSTABLE_INDEX = 3
#: Index of the entry left without tensor or moduli (no reference values).
NO_VALUES_INDEX = 5


def result_row(
    material: Material,
    model: str,
    tensor: np.ndarray | None,
    *,
    status: str = "ok",
    seconds: float = 1.0,
) -> MaterialResult:
    """A results row as the workflow writes it (properties derived from ``tensor``)."""
    atoms = material.atoms
    row: dict[str, Any] = {f.name: None for f in dataclasses.fields(MaterialResult)}
    row.update(
        material_id=material.material_id,
        model=model,
        formula=material.formula,
        n_atoms=len(atoms),
        status=status,
        error=None if status == "ok" else f"{status} on purpose",
        ion_mode="relaxed",
        atomic_numbers=atoms.numbers.tolist(),
        wall_time_s=seconds * 1.5,
        seconds_per_material=seconds,
        reference_k_vrh_gpa=material.reference_k_vrh_gpa,
        reference_g_vrh_gpa=material.reference_g_vrh_gpa,
    )
    if status == "ok" and tensor is not None:
        props = derive_properties(tensor, atoms)
        row.update(
            relax_converged=True,
            relax_steps=10,
            relaxed_energy_ev=-1.0,
            relaxed_volume_a3=float(atoms.get_volume()),
            relaxed_cell_a=atoms.cell.array.reshape(-1).tolist(),
            relaxed_positions_a=atoms.positions.reshape(-1).tolist(),
            n_deformations=24,
            deformations_converged=24,
            elastic_tensor_gpa=np.asarray(tensor).reshape(-1).tolist(),
            fit_residuals_gpa=[0.1] * 36,
            **props.as_columns(),
        )
    return MaterialResult(**row)


def perturbed(tensor: np.ndarray, scale: float, noise: float, seed: int) -> np.ndarray:
    """``scale * tensor`` with symmetric relative noise on every non-zero element."""
    rng = np.random.default_rng(seed)
    factors = 1.0 + noise * rng.standard_normal((6, 6))
    factors = 0.5 * (factors + factors.T)
    return scale * np.asarray(tensor) * factors


#: The standard strain magnitudes (normal, shear) of the stress-strain points written.
NORMAL_STRAINS = (-0.01, -0.005, 0.005, 0.01)
SHEAR_STRAINS = (-0.06, -0.03, 0.03, 0.06)


def stress_points(material_id: str, model: str, tensor: np.ndarray) -> list[DeformationRecord]:
    """The 24 stress-strain points of a linear material with ``tensor`` (sigma = C eps,
    Voigt, engineering shear strain), as the workflow writes them."""
    records = []
    for component in range(6):
        for magnitude in NORMAL_STRAINS if component < 3 else SHEAR_STRAINS:
            voigt = np.zeros(6)
            voigt[component] = magnitude
            xx, yy, zz, yz, xz, xy = voigt
            strain = [xx, xy / 2, xz / 2, xy / 2, yy, yz / 2, xz / 2, yz / 2, zz]
            records.append(
                DeformationRecord(
                    material_id=material_id,
                    model=model,
                    index=len(records),
                    component=component,
                    magnitude=magnitude,
                    green_lagrange_strain=[float(v) for v in strain],
                    stress_gpa=(np.asarray(tensor) @ voigt).tolist(),
                    converged=True,
                    error=None,
                )
            )
    return records


def manifest_entry(dataset: Path, models: list[str], fmax: float = 0.1) -> dict[str, Any]:
    """A manifest entry as ``umlip run`` writes it (workflow settings, services)."""
    workflow = WorkflowSettings().as_dict()
    workflow["relax"] = {**workflow["relax"], "fmax": fmax}
    return {
        "run_id": f"test-{fmax}",
        "started": "2026-12-01T10:00:00+00:00",
        "finished": "2026-12-01T10:02:00+00:00",
        "wall_time_s": 120.0,
        "dataset": str(dataset),
        "n_materials": N_MATERIALS,
        "workflow": workflow,
        "services": {
            model: {
                "model_name": model,
                "model_version": "1.0",
                "checkpoint_name": f"{model}-checkpoint-v1",
                "checkpoint_sha256": f"{index:02d}" * 32,
                "device": "cpu",
                "dtype": "float32",
                "package_versions": {"torch": "2.13.0+cpu", "python": "3.11.7"},
            }
            for index, model in enumerate(models)
        },
    }


def write_run(
    out_dir: Path, materials: list[Material], scales: dict[str, float], noise: float = 0.05
) -> Path:
    """A run directory: per model, perturbed DFT tensors; special rows for some materials.

    - model index 1 (second model): material 1 failed, material 2 skipped;
    - every model: material 7 predicted Born-unstable (C44 made negative);
    - every ok row has its 24 stress-strain points (sigma = C eps of its tensor).
    """
    store = ResultStore(out_dir)
    rows = []
    points = []
    for m_index, (model, scale) in enumerate(scales.items()):
        for i, material in enumerate(materials):
            seconds = 0.5 + 0.1 * i + m_index
            tensor = material.reference_tensor_gpa
            if tensor is None:
                rows.append(result_row(material, model, None, status="failed", seconds=seconds))
                continue
            predicted = perturbed(tensor, scale, noise, seed=1000 * m_index + i)
            if i == 7:
                predicted[3, 3] = -50.0
            status = "ok"
            if m_index == 1 and i in (1, 2):
                status = "failed" if i == 1 else "skipped"
            rows.append(result_row(material, model, predicted, status=status, seconds=seconds))
            if status == "ok":
                points += stress_points(material.material_id, model, predicted)
    store.write(rows, points)
    store.compact()
    return out_dir
