"""The elastic workflow of a group of materials through one potential.

Stage 1 relaxes every material's cell in lockstep; stage 2 evaluates the 24 deformed
cells of each relaxed material (clamped: one batch per material; relaxed: ions relaxed
at fixed cell, all deformed cells of the group in lockstep); stage 3 fits the elastic
tensor and derives the properties (SCIENCE.md sections 1-3). Pure functions of a
:data:`BatchEvaluator`, so they run the same in a Ray actor, a test or a notebook.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import numpy as np
from ase import Atoms

from umlip_orchestrator.datasets import Material
from umlip_orchestrator.elastic import (
    Deformation,
    StrainSettings,
    deform_atoms,
    deformation_set,
    derive_properties,
    fit_elastic_tensor,
)
from umlip_orchestrator.evaluation import BatchEvaluator, StructureFailed
from umlip_orchestrator.records import DeformationRecord, MaterialResult, Status
from umlip_orchestrator.relax import RelaxResult, RelaxSettings, relax_vectorized
from umlip_orchestrator.units import EV_PER_A3_TO_GPA

IonMode = Literal["relaxed", "clamped"]

#: Symmetry tolerance for the relaxed-ion deformed cells, Å.
DEFORMED_SYMPREC = 1e-5


@dataclass(frozen=True, kw_only=True)
class WorkflowSettings:
    """Every setting that defines a result; stored in the run manifest.

    Attributes:
        relax: relaxation of the starting structure (cell and positions).
        strains: the deformation set.
        ion_mode: "relaxed" (ions relaxed in each deformed cell) or "clamped".
        max_active: most structures relaxed in lockstep (one Calculate per step).
    """

    relax: RelaxSettings = field(default_factory=RelaxSettings)
    strains: StrainSettings = field(default_factory=StrainSettings)
    ion_mode: IonMode = "relaxed"
    max_active: int = 64

    def __post_init__(self) -> None:
        if self.ion_mode not in ("relaxed", "clamped"):
            raise ValueError(f"ion_mode must be 'relaxed' or 'clamped', got {self.ion_mode!r}")
        if self.max_active < 1:
            raise ValueError("max_active must be >= 1")

    @property
    def deformation_relax(self) -> RelaxSettings:
        """Relaxed-ion mode: positions only, at the fixed deformed cell.

        The symmetry kept is the deformed cell's own, found with a tight tolerance
        (1e-5 Å): with the relaxation's 1e-2 Å, spglib could still see the undeformed
        symmetry in a cell strained by 0.5 % and symmetrise the forces wrongly.
        """
        return RelaxSettings(
            fmax=self.relax.fmax,
            max_steps=self.relax.max_steps,
            relax_cell=False,
            fix_symmetry=self.relax.fix_symmetry,
            symprec=min(self.relax.symprec, DEFORMED_SYMPREC),
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "relax": asdict(self.relax),
            "strains": self.strains.as_dict(),
            "ion_mode": self.ion_mode,
            "max_active": self.max_active,
            "deformation_relax": asdict(self.deformation_relax),
        }


@dataclass(frozen=True)
class MaterialOutcome:
    """Everything one material produced through one model."""

    result: MaterialResult
    deformations: list[DeformationRecord]


def _voigt_to_tensor(voigt: np.ndarray) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = voigt
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def run_elastic_workflow(
    materials: Sequence[Material],
    evaluate: BatchEvaluator,
    model: str,
    settings: WorkflowSettings,
) -> list[MaterialOutcome]:
    """Relaxes, deforms and fits every material; one outcome per material, in order.

    A material that fails (unsupported element, failed relaxation, too few stresses to
    fit) gets a row with status "failed" and the reason; the others go on. Exceptions
    of ``evaluate`` itself (the service is unreachable) propagate.
    """
    start = time.monotonic()
    relaxed: dict[int, RelaxResult] = {}
    for index, result in relax_vectorized(
        ((i, m.atoms) for i, m in enumerate(materials)),
        evaluate,
        settings.relax,
        max_active=settings.max_active,
    ):
        relaxed[index] = result
    deformations = deformation_set(settings.strains)
    fits_input = [i for i in range(len(materials)) if relaxed[i].ok]
    stresses, finished_at = _deformed_stresses(
        {i: relaxed[i].atoms for i in fits_input}, deformations, evaluate, settings
    )
    seconds_per_material = (time.monotonic() - start) / max(1, len(materials))
    outcomes = []
    for index, material in enumerate(materials):
        outcomes.append(
            _outcome(
                material,
                model,
                settings,
                relaxed[index],
                deformations,
                stresses.get(index, {}),
                wall_time_s=finished_at.get(index, time.monotonic()) - start,
                seconds_per_material=seconds_per_material,
            )
        )
    return outcomes


#: Per deformation index: (stress Voigt eV/Å^3 or None, converged or None, error or None,
#: relaxed-ion positions Å or None).
_DeformedResult = tuple[np.ndarray | None, bool | None, str | None, np.ndarray | None]


def _deformed_stresses(
    structures: dict[int, Atoms],
    deformations: list[Deformation],
    evaluate: BatchEvaluator,
    settings: WorkflowSettings,
) -> tuple[dict[int, dict[int, _DeformedResult]], dict[int, float]]:
    """Stresses of every deformed cell; also when each material's last cell finished."""
    results: dict[int, dict[int, _DeformedResult]] = {i: {} for i in structures}
    finished_at: dict[int, float] = {}
    if settings.ion_mode == "clamped":
        for index, atoms in structures.items():
            cells = [deform_atoms(atoms, d) for d in deformations]
            for k, outcome in enumerate(evaluate(cells)):
                if isinstance(outcome, StructureFailed):
                    results[index][k] = (None, None, f"{outcome.code}: {outcome}", None)
                else:
                    results[index][k] = (outcome.stress, None, None, None)
            finished_at[index] = time.monotonic()
        return results, finished_at
    jobs = (
        ((index, k), deform_atoms(atoms, d))
        for index, atoms in structures.items()
        for k, d in enumerate(deformations)
    )
    for (index, k), relaxed in relax_vectorized(
        jobs, evaluate, settings.deformation_relax, max_active=settings.max_active
    ):
        results[index][k] = (
            relaxed.stress if relaxed.ok else None,
            relaxed.converged,
            relaxed.error,
            relaxed.atoms.positions.copy() if relaxed.ok else None,
        )
        if len(results[index]) == len(deformations):
            finished_at[index] = time.monotonic()
    return results, finished_at


def _outcome(
    material: Material,
    model: str,
    settings: WorkflowSettings,
    relaxed: RelaxResult,
    deformations: list[Deformation],
    stresses: dict[int, _DeformedResult],
    *,
    wall_time_s: float,
    seconds_per_material: float,
) -> MaterialOutcome:
    records = [
        DeformationRecord(
            material_id=material.material_id,
            model=model,
            index=k,
            component=d.component,
            magnitude=d.magnitude,
            green_lagrange_strain=d.green_lagrange_strain.reshape(-1).tolist(),
            stress_gpa=None
            if stresses[k][0] is None
            else (np.asarray(stresses[k][0]) * EV_PER_A3_TO_GPA).tolist(),
            converged=stresses[k][1],
            error=stresses[k][2],
            deformed_positions_a=None
            if stresses[k][3] is None
            else np.asarray(stresses[k][3]).reshape(-1).tolist(),
        )
        for k, d in enumerate(deformations)
        if k in stresses
    ]
    base = _base(material, model, settings.ion_mode, wall_time_s, seconds_per_material)
    if not relaxed.ok:
        return MaterialOutcome(_failed(base, f"relaxation failed: {relaxed.error}"), records)
    atoms = relaxed.atoms
    base |= {
        "relax_converged": relaxed.converged,
        "relax_steps": relaxed.steps,
        "relaxed_energy_ev": relaxed.energy,
        "relaxed_volume_a3": atoms.get_volume(),
        "relaxed_cell_a": atoms.cell.array.reshape(-1).tolist(),
        "relaxed_positions_a": atoms.positions.reshape(-1).tolist(),
        "n_deformations": len(deformations),
        "deformations_converged": sum(1 for r in records if r.converged)
        if settings.ion_mode == "relaxed"
        else None,
    }
    good = [r for r in records if r.stress_gpa is not None]
    strains = [np.zeros((3, 3))] + [np.reshape(r.green_lagrange_strain, (3, 3)) for r in good]
    stress_list = [_voigt_to_tensor(relaxed.stress * EV_PER_A3_TO_GPA)] + [
        _voigt_to_tensor(np.asarray(r.stress_gpa)) for r in good
    ]
    failed_cells = len(records) - len(good)
    try:
        fit = fit_elastic_tensor(np.array(strains), np.array(stress_list))
        props = derive_properties(fit.tensor, atoms)
    except ValueError as error:
        reason = (
            f"elastic fit failed ({failed_cells} of {len(records)} deformed cells failed): {error}"
        )
        return MaterialOutcome(_failed(base, reason), records)
    error = f"{failed_cells} deformed cells failed" if failed_cells else None
    row = MaterialResult(
        **base,
        status="ok",
        error=error,
        elastic_tensor_gpa=fit.tensor.reshape(-1).tolist(),
        fit_residuals_gpa=fit.residuals.reshape(-1).tolist(),
        **props.as_columns(),  # type: ignore[arg-type]
    )
    return MaterialOutcome(row, records)


def _base(
    material: Material, model: str, ion_mode: str, wall_time_s: float, seconds_per_material: float
) -> dict[str, object]:
    """The fields every row has, whatever happened to the material."""
    return {
        "material_id": material.material_id,
        "model": model,
        "formula": material.formula,
        "n_atoms": len(material.atoms),
        "ion_mode": ion_mode,
        "atomic_numbers": material.atoms.numbers.tolist(),
        "wall_time_s": wall_time_s,
        "seconds_per_material": seconds_per_material,
        "reference_k_vrh_gpa": material.reference_k_vrh_gpa,
        "reference_g_vrh_gpa": material.reference_g_vrh_gpa,
    }


def _failed(base: dict[str, object], error: str, status: Status = "failed") -> MaterialResult:
    """A row for a material that produced no tensor (fields not yet known are None)."""
    unknown = dict.fromkeys(f.name for f in fields(MaterialResult))
    return MaterialResult(**(unknown | base | {"status": status, "error": error}))  # type: ignore[arg-type]


def unfinished_result(
    material: Material, model: str, ion_mode: str, reason: str, *, status: Status
) -> MaterialResult:
    """A row for a material that was skipped (e.g. unsupported elements) or whose
    service call failed as a whole (status "failed")."""
    return _failed(_base(material, model, ion_mode, 0.0, 0.0), reason, status=status)
