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
from umlip_orchestrator.records import MaterialResult
from umlip_orchestrator.tables import ResultStore

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


def write_run(
    out_dir: Path, materials: list[Material], scales: dict[str, float], noise: float = 0.05
) -> Path:
    """A run directory: per model, perturbed DFT tensors; special rows for some materials.

    - model index 1 (second model): material 1 failed, material 2 skipped;
    - every model: material 7 predicted Born-unstable (C44 made negative);
    - ``manifest.json`` names the reference file as the run's dataset.
    """
    store = ResultStore(out_dir)
    rows = []
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
    store.write(rows)
    store.compact()
    return out_dir
