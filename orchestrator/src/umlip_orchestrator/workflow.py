"""The elastic workflow of many materials through one potential.

Each material's cell is relaxed (stage 1); its 24 deformed cells are evaluated (stage 2;
clamped ions: one evaluation each; relaxed ions: positions relaxed at the fixed cell);
its elastic tensor is fitted and the properties derived (stage 3; SCIENCE.md sections
1-3). All stages of all materials share one continuous stream of batched requests
(:func:`~umlip_orchestrator.relax.run_continuously`), and a material's outcome is
yielded as soon as its last deformed cell is done. Pure functions of a
:data:`BatchEvaluator`, so they run the same in a Ray actor, a test or a notebook."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import numpy as np

from umlip_orchestrator.datasets import Material
from umlip_orchestrator.elastic import (
    Deformation,
    StrainSettings,
    deform_atoms,
    deformation_set,
    derive_properties,
    fit_elastic_tensor,
    strain_dependence,
)
from umlip_orchestrator.evaluation import BatchEvaluator, Evaluation, StructureFailed
from umlip_orchestrator.records import DeformationRecord, MaterialResult, Status
from umlip_orchestrator.relax import Job, JobQueue, RelaxResult, RelaxSettings, run_continuously
from umlip_orchestrator.relax.pipeline import JobOutcome
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
        max_active: most structures computed at once over all requests in flight
            (each request also stays within the service's ``max_batch_atoms``).
        requests_in_flight: ``Calculate`` requests in flight at once; while the service
            computes one, the client steps the structures of the other.
    """

    relax: RelaxSettings = field(default_factory=RelaxSettings)
    strains: StrainSettings = field(default_factory=StrainSettings)
    ion_mode: IonMode = "relaxed"
    max_active: int = 128
    requests_in_flight: int = 2

    def __post_init__(self) -> None:
        if self.ion_mode not in ("relaxed", "clamped"):
            raise ValueError(f"ion_mode must be 'relaxed' or 'clamped', got {self.ion_mode!r}")
        if self.max_active < 1:
            raise ValueError("max_active must be >= 1")
        if self.requests_in_flight < 1:
            raise ValueError("requests_in_flight must be >= 1")

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
            "requests_in_flight": self.requests_in_flight,
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
    *,
    max_atoms: int | None = None,
) -> list[MaterialOutcome]:
    """Relaxes, deforms and fits every material; one outcome per material, in order.

    :func:`stream_elastic_workflow` collected and put back in input order.
    """
    stream = stream_elastic_workflow(materials, evaluate, model, settings, max_atoms=max_atoms)
    keyed = dict(stream)
    return [keyed[i] for i in range(len(materials))]


@dataclass
class _MaterialState:
    """A material in the pipeline: its relaxation and the deformed cells done so far."""

    material: Material
    started: float
    relaxed: RelaxResult | None = None
    deformed: dict[int, _DeformedResult] = field(default_factory=dict)


def stream_elastic_workflow(
    materials: Iterable[Material],
    evaluate: BatchEvaluator,
    model: str,
    settings: WorkflowSettings,
    *,
    max_atoms: int | None = None,
) -> Iterator[tuple[int, MaterialOutcome]]:
    """Relaxes, deforms and fits every material; yields (index in ``materials``,
    outcome) as each material completes.

    Every job of every material shares one stream of requests
    (:func:`~umlip_orchestrator.relax.run_continuously`): new materials' cell
    relaxations, and as soon as a material is relaxed, its deformed cells (clamped:
    single evaluations; relaxed: fixed-cell relaxations), which go ahead of materials
    not yet started. A material is read from ``materials`` only when there is room for
    it, so the stream can be long. A material that fails (unsupported element, failed
    relaxation, too few stresses to fit) is an outcome with status "failed" and the
    reason; the others go on. Exceptions of ``evaluate`` itself (the service is
    unreachable) propagate; outcomes already yielded stay valid.

    Args:
        max_atoms: the most atoms in one request (the service's ``max_batch_atoms``).
    """
    start = time.monotonic()
    deformations = deformation_set(settings.strains)
    deformed_settings = settings.deformation_relax if settings.ion_mode == "relaxed" else None
    states: dict[int, _MaterialState] = {}
    source = enumerate(materials)

    def next_material() -> Job[tuple[int, int]] | None:
        entry = next(source, None)
        if entry is None:
            return None
        index, material = entry
        states[index] = _MaterialState(material, started=time.monotonic())
        return Job((index, _RELAX), material.atoms, settings.relax)

    queue: JobQueue[tuple[int, int]] = JobQueue(next_material)
    completed = 0
    for (index, k), outcome in run_continuously(
        queue,
        evaluate,
        max_active=settings.max_active,
        max_atoms=max_atoms,
        in_flight=settings.requests_in_flight,
    ):
        state = states[index]
        if k == _RELAX:
            assert isinstance(outcome, RelaxResult)
            state.relaxed = outcome
            if outcome.ok:
                for j, deformation in enumerate(deformations):
                    cell = deform_atoms(outcome.atoms, deformation)
                    queue.push(Job((index, j), cell, deformed_settings))
                continue
        else:
            state.deformed[k] = _deformed_result(outcome)
            if len(state.deformed) < len(deformations):
                continue
        del states[index]
        completed += 1
        now = time.monotonic()
        assert state.relaxed is not None
        yield (
            index,
            _outcome(
                state.material,
                model,
                settings,
                state.relaxed,
                deformations,
                state.deformed,
                wall_time_s=now - state.started,
                seconds_per_material=(now - start) / completed,
            ),
        )


#: Key of a material's own relaxation (deformed cells are keyed by their index >= 0).
_RELAX = -1

#: Per deformation index: (stress Voigt eV/Å^3 or None, converged or None, error or None,
#: relaxed-ion positions Å or None).
_DeformedResult = tuple[np.ndarray | None, bool | None, str | None, np.ndarray | None]


def _deformed_result(outcome: JobOutcome) -> _DeformedResult:
    """A deformed cell's stress (or why there is none) from its job's outcome."""
    if isinstance(outcome, StructureFailed):
        return (None, None, f"{outcome.code}: {outcome}", None)
    if isinstance(outcome, Evaluation):  # clamped ions: one evaluation
        stress = np.asarray(outcome.stress, dtype=np.float64)
        if stress.shape != (6,):
            return (None, None, f"stress has shape {stress.shape}, expected (6,) Voigt", None)
        return (stress, None, None, None)
    return (
        outcome.stress if outcome.ok else None,
        outcome.converged,
        outcome.error,
        outcome.atoms.positions.copy() if outcome.ok else None,
    )


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
        linearity = strain_dependence(np.array(strains), np.array(stress_list), fit=fit)
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
        small_strain_tensor_gpa=linearity.small_tensor.reshape(-1).tolist()
        if linearity.ok
        else None,
        strain_dependence_pct=linearity.dependence_pct.tolist() if linearity.ok else None,
        max_strain_dependence_pct=linearity.max_dependence_pct if linearity.ok else None,
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
