"""Vectorized lockstep relaxation: ASE's FIRE, FrechetCellFilter and FixSymmetry in numpy.

The arithmetic behind :func:`~umlip_orchestrator.relax.pipeline.relax_vectorized` and
:func:`~umlip_orchestrator.relax.pipeline.run_continuously`, an alternative to
:func:`~umlip_orchestrator.relax.lockstep.relax_in_lockstep` without threads: the atoms
of every active structure are concatenated (with offsets), per-structure scalars (FIRE's
time step and mixing, the deformation gradient, ...) are arrays, and one optimiser step
of all of them is a handful of array operations. Each structure follows the trajectory
of ASE's own recipe run alone on it, to rounding:

* ``FIRE`` (``ase.optimize.FIRE`` with its defaults: ``dt=0.1``, ``maxstep=0.2``,
  ``dtmax=1.0``, ``Nmin=5``, ``finc=1.1``, ``fdec=0.5``, ``astart=0.1``, ``fa=0.99``,
  ``a=0.1``, no downhill check): velocity mixing when ``v.f > 0``, reset otherwise, the
  step limited to ``maxstep`` by the norm of each structure's whole optimisable vector.
* ``FrechetCellFilter`` (``ase.filters``, no mask, ``scalar_pressure=0``,
  ``exp_cell_factor`` = number of atoms): generalized coordinates are the positions
  in the undeformed cell plus the log of the deformation gradient ``F``; the forces
  are ``f @ F`` on the atoms and the adjoint Frechet derivative of ``expm`` at
  ``log F`` applied to ``virial @ F^-T``, divided by the number of atoms, on the cell.
  Convergence is ASE's: every row (atoms and the three cell rows) below ``fmax``.
* ``FixSymmetry`` (``ase.constraints``): refines the structure's symmetry and finds the
  space group operations and the atom mapping once, with spglib, as ASE does; forces
  are symmetrised as rank-1 and the stress as rank-2 tensors, and each step's change of
  positions (rank 1) and of the cell (rank 2, with ASE's 0.25 limit) is symmetrised.
  The rank-1 projection of each structure is precomputed as a sparse matrix over its
  scaled (lattice) coordinates, so a step applies it to all structures at once.

Two things differ in the arithmetic only, not in the algorithm (see ``tests``): the
cell coordinate is carried as ``log F`` from step to step instead of being recomputed
with ``scipy.linalg.logm`` from the cell (ASE's round trip ``logm(expm(X)) = X``;
``logm`` is used whenever the FixSymmetry projection changed the cell), and ``expm``
and its Frechet derivative are a batched Taylor series with scaling and squaring
instead of scipy's Pade approximants. Both agree to rounding (about 1e-15 relative).
"""

from __future__ import annotations

import logging
import warnings
from typing import Generic, TypeVar

import numpy as np
import scipy.linalg
from ase import Atoms
from numpy.typing import NDArray

from umlip_orchestrator.evaluation import Evaluation, StructureFailed
from umlip_orchestrator.relax.batching import plain_copy
from umlip_orchestrator.relax.settings import RelaxResult, RelaxSettings
from umlip_orchestrator.relax.structures import (
    Structure,
    failure_result,
    parse_outcome,
)
from umlip_orchestrator.relax.tensors import expm, expm_frechet, symmetrize_rank2, voigt_to_full

K = TypeVar("K")

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

# ASE's FIRE defaults (ase.optimize.FIRE.__init__ and Optimizer.defaults["maxstep"]).
_DT = 0.1
_MAXSTEP = 0.2
_DTMAX = 1.0
_NMIN = 5
_FINC = 1.1
_FDEC = 0.5
_ASTART = 0.1
_FA = 0.99
_A = 0.1

#: FixSymmetry.adjust_cell refuses (RuntimeError) or warns above these deformation steps.
_CELL_STEP_ERROR = 0.25
_CELL_STEP_WARNING = 0.15
#: A FixSymmetry-adjusted cell further than this from the requested one gets its log
#: recomputed with scipy's logm (as ASE does every step); below it they agree to rounding.
_LOGM_REFRESH = 1e-12
_EYE3 = np.eye(3)


class _Batch(Generic[K]):
    """The state of every active structure, as concatenated arrays.

    Per atom (A rows, structure ``b`` at ``offsets[b]:offsets[b + 1]``): positions and
    the FIRE velocity of the atom rows. Per structure (B rows): cell, reference cell,
    log of the deformation gradient, FIRE velocity of the cell rows, FIRE's ``dt``,
    ``a``, ``Nsteps`` and whether it has a velocity yet, and the optimiser's step count.
    """

    def __init__(self, settings: RelaxSettings) -> None:
        self.settings = settings
        self.structures: list[Structure[K]] = []
        self.pending: list[Structure[K]] = []
        self.counts = np.zeros(0, dtype=np.int64)
        self.positions = np.zeros((0, 3))
        self.velocity = np.zeros((0, 3))
        self.cell = np.zeros((0, 3, 3))
        self.reference_cell = np.zeros((0, 3, 3))
        self.log_deform = np.zeros((0, 3, 3))
        self.cell_velocity = np.zeros((0, 3, 3))
        self.dt = np.zeros(0)
        self.mix = np.zeros(0)
        self.fire_steps = np.zeros(0, dtype=np.int64)
        self.started = np.zeros(0, dtype=bool)
        self.steps = np.zeros(0, dtype=np.int64)
        self._layout()

    def __len__(self) -> int:
        return len(self.structures) + len(self.pending)

    # --- membership --------------------------------------------------------------

    def add(self, structure: Structure[K]) -> None:
        """Queues ``structure``; it joins the arrays before the next snapshot."""
        self.pending.append(structure)

    def _commit(self) -> None:
        """Appends the queued structures' starting states to the arrays."""
        new = self.pending
        if not new:
            return
        self.pending = []
        count = len(new)
        self.structures.extend(new)
        self.counts = np.concatenate([self.counts, [s.n_atoms for s in new]]).astype(np.int64)
        starts = [np.asarray(s.template.positions, dtype=np.float64) for s in new]
        self.positions = np.concatenate([self.positions, *starts])
        self.velocity = np.concatenate([self.velocity, np.zeros((sum(map(len, starts)), 3))])
        cells = np.array([s.template.cell[:] for s in new], dtype=np.float64).reshape(count, 3, 3)
        self.cell = np.concatenate([self.cell, cells])
        self.reference_cell = np.concatenate([self.reference_cell, cells])
        self.log_deform = np.concatenate([self.log_deform, np.zeros((count, 3, 3))])
        self.cell_velocity = np.concatenate([self.cell_velocity, np.zeros((count, 3, 3))])
        self.dt = np.concatenate([self.dt, np.full(count, _DT)])
        self.mix = np.concatenate([self.mix, np.full(count, _A)])
        self.fire_steps = np.concatenate([self.fire_steps, np.zeros(count, dtype=np.int64)])
        self.started = np.concatenate([self.started, np.zeros(count, dtype=bool)])
        self.steps = np.concatenate([self.steps, np.zeros(count, dtype=np.int64)])
        self._layout()

    def _remove(self, leaving: NDArray[np.bool_]) -> None:
        """Drops the structures where ``leaving`` is True."""
        if not leaving.any():
            return
        keep = ~leaving
        keep_atoms = np.repeat(keep, self.counts)
        self.structures = [s for s, k in zip(self.structures, keep, strict=True) if k]
        self.counts = self.counts[keep]
        self.positions = self.positions[keep_atoms]
        self.velocity = self.velocity[keep_atoms]
        for name in (
            "cell",
            "reference_cell",
            "log_deform",
            "cell_velocity",
            "dt",
            "mix",
            "fire_steps",
            "started",
            "steps",
        ):
            setattr(self, name, getattr(self, name)[keep])
        self._layout()

    def _layout(self) -> None:
        """Recomputes offsets, the atom-to-structure index and the symmetry operators."""
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.starts = self.offsets[:-1]
        self.owner = np.repeat(np.arange(len(self.counts)), self.counts)
        self.n_float = self.counts.astype(np.float64)
        self.sym_values = np.zeros(0)
        self.sym_columns = np.zeros(0, dtype=np.int64)
        self.sym_row_starts = np.zeros(0, dtype=np.int64)
        self.rank2 = np.zeros((0, 9, 9))
        symmetries = [s.symmetry for s in self.structures]
        if not symmetries or any(sym is None for sym in symmetries):
            return
        syms = [sym for sym in symmetries if sym is not None]
        shifts = np.repeat(3 * self.starts, [len(sym.columns) for sym in syms])
        self.sym_columns = np.concatenate([sym.columns for sym in syms]) + shifts
        self.sym_values = np.concatenate([sym.values for sym in syms])
        lengths = np.concatenate([sym.row_lengths for sym in syms])
        self.sym_row_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.rank2 = np.stack([sym.rank2 for sym in syms])

    # --- one step ----------------------------------------------------------------

    def snapshots(self) -> list[Atoms]:
        """Fresh plain structures at the current state, one per active structure."""
        self._commit()
        positions = self.positions
        offsets = self.offsets
        return [
            s.snapshot(positions[offsets[b] : offsets[b + 1]].copy(), self.cell[b])
            for b, s in enumerate(self.structures)
        ]

    def advance(
        self, snapshots: list[Atoms], outcomes: list[Evaluation | StructureFailed]
    ) -> list[tuple[K, RelaxResult]]:
        """Takes one evaluation per structure, then one FIRE step of the unfinished ones.

        Returns:
            The structures that finished (converged, out of steps or failed), in order.
        """
        settings = self.settings
        count = len(self.structures)
        energy = np.zeros(count)
        stress = np.zeros((count, 6))
        forces_parts: list[FloatArray] = []
        errors: list[str | None] = [None] * count
        for b, (structure, outcome) in enumerate(zip(self.structures, outcomes, strict=True)):
            n_atoms = structure.n_atoms
            error, parsed = parse_outcome(outcome, n_atoms)
            if parsed is None:
                errors[b] = error
                forces_parts.append(np.zeros((n_atoms, 3)))
                continue
            energy[b], forces_b, stress[b] = parsed
            forces_parts.append(forces_b)
            structure.last = snapshots[b]
            structure.last_energy = float(energy[b])
            structure.last_forces = forces_b
            structure.last_stress = stress[b].copy()
        forces = np.concatenate(forces_parts)
        failed = np.array([e is not None for e in errors], dtype=bool)

        with np.errstate(all="ignore"):
            atom_grad, cell_grad = self._filter_forces(forces, stress)
            row_norms = np.sqrt((atom_grad * atom_grad).sum(axis=1))
            largest = np.maximum.reduceat(row_norms, self.starts)
            if settings.relax_cell:
                cell_norms = np.sqrt((cell_grad * cell_grad).sum(axis=2)).max(axis=1)
                largest = np.maximum(largest, cell_norms)
        converged = ~failed & (largest < settings.fmax)
        out_of_steps = ~failed & ~converged & (self.steps >= settings.max_steps)
        stepping = ~(failed | converged | out_of_steps)
        step_errors = self._fire_step(atom_grad, cell_grad, stepping)

        finished: list[tuple[K, RelaxResult]] = []
        leaving = ~stepping
        for b in np.flatnonzero(leaving | (step_errors != "")):
            structure = self.structures[b]
            steps = int(self.steps[b])
            error = errors[b] if failed[b] else (step_errors[b] or None)
            if error is not None:
                leaving[b] = True
                finished.append((structure.key, failure_result(structure, steps, error)))
                continue
            result = RelaxResult(
                atoms=plain_copy(snapshots[b]),
                converged=bool(converged[b]),
                steps=steps,
                energy=float(energy[b]),
                forces=forces_parts[b].copy(),
                stress=stress[b].copy(),
                error=None,
            )
            finished.append((structure.key, result))
        self.steps[stepping & (step_errors == "")] += 1
        self._remove(leaving)
        return finished

    def _filter_forces(
        self, forces: FloatArray, stress_voigt: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """The forces FIRE sees: FixSymmetry-adjusted, through the FrechetCellFilter.

        Returns:
            (A, 3) atom rows and (B, 3, 3) cell rows (zeros at fixed cell).
        """
        cell = self.cell
        count = len(cell)
        stress = voigt_to_full(stress_voigt)
        if self.structures and self.structures[0].symmetry is not None:
            inverse = np.linalg.inv(cell)
            forces = self._symmetrize_rank1(forces, cell, inverse)
            stress = symmetrize_rank2(cell, inverse, stress, self.rank2)
            stress = 0.5 * (stress + stress.transpose(0, 2, 1))  # Voigt round trip
        if not self.settings.relax_cell:
            return forces, np.zeros((count, 3, 3))
        volume = np.abs(np.linalg.det(cell))
        virial = -volume[:, None, None] * stress
        deform = np.linalg.solve(self.reference_cell, cell).transpose(0, 2, 1)
        ucf_grad = virial @ np.linalg.inv(deform.transpose(0, 2, 1))
        log_grad = expm_frechet(self.log_deform.transpose(0, 2, 1), ucf_grad)
        atom_grad = (forces[:, None, :] @ deform[self.owner])[:, 0, :]
        return atom_grad, log_grad / self.n_float[:, None, None]

    def _symmetrize_rank1(
        self, vectors: FloatArray, lattice: FloatArray, inverse: FloatArray
    ) -> FloatArray:
        """ASE's ``symmetrize_rank1`` of per-atom vectors, for every structure at once."""
        owner = self.owner
        scaled = (vectors[:, None, :] @ inverse[owner])[:, 0, :].ravel()
        products = self.sym_values * scaled[self.sym_columns]
        projected = np.add.reduceat(products, self.sym_row_starts).reshape(-1, 3)
        return (projected[:, None, :] @ lattice[owner])[:, 0, :]

    def _fire_step(
        self, atom_grad: FloatArray, cell_grad: FloatArray, stepping: NDArray[np.bool_]
    ) -> NDArray[np.str_]:
        """One ASE FIRE step (``FIRE.step``) of the structures where ``stepping``.

        Returns:
            Per structure, why its step failed ("" if it did not).
        """
        count = len(self.structures)
        errors = np.full(count, "", dtype=object)
        if not stepping.any():
            return errors
        relax_cell = self.settings.relax_cell
        starts = self.starts
        owner = self.owner
        step_atoms = stepping[owner]
        vel, cvel = self.velocity, self.cell_velocity

        def per_structure(atom_part: FloatArray, cell_part: FloatArray) -> FloatArray:
            total = np.add.reduceat(atom_part.sum(axis=1), starts)
            if relax_cell:
                total = total + cell_part.sum(axis=(1, 2))
            return total

        with np.errstate(all="ignore"):
            vf = per_structure(atom_grad * vel, cell_grad * cvel)
            grad2 = per_structure(atom_grad * atom_grad, cell_grad * cell_grad)
            vv = per_structure(vel * vel, cvel * cvel)
            mixing = stepping & self.started & (vf > 0.0)
            resetting = stepping & self.started & ~(vf > 0.0)
            # (1 - a) v + a g / sqrt(g.g) * sqrt(v.v), in ASE's order of operations
            a = self.mix
            factor = np.where(mixing, np.sqrt(vv), 0.0)
            norm = np.where(mixing, np.sqrt(grad2), 1.0)
            keep = np.where(mixing, 1.0 - a, np.where(resetting, 0.0, 1.0))
            gain = np.where(mixing, a, 0.0)
            new_vel = np.where(
                mixing[owner][:, None],
                keep[owner][:, None] * vel
                + gain[owner][:, None] * atom_grad / norm[owner][:, None] * factor[owner][:, None],
                vel * keep[owner][:, None],
            )
            new_cvel = np.where(
                mixing[:, None, None],
                keep[:, None, None] * cvel
                + gain[:, None, None] * cell_grad / norm[:, None, None] * factor[:, None, None],
                cvel * keep[:, None, None],
            )
            grow = mixing & (self.fire_steps > _NMIN)
            dt = np.where(grow, np.minimum(self.dt * _FINC, _DTMAX), self.dt)
            dt = np.where(resetting, dt * _FDEC, dt)
            self.mix = np.where(grow, a * _FA, np.where(resetting, _ASTART, a))
            self.fire_steps = np.where(
                mixing, self.fire_steps + 1, np.where(resetting, 0, self.fire_steps)
            )
            self.dt = np.where(stepping, dt, self.dt)
            self.started = self.started | stepping
            # v += dt g; dr = dt v; dr limited to maxstep by its norm
            dt_atoms = self.dt[owner][:, None]
            new_vel = new_vel + dt_atoms * atom_grad
            new_cvel = new_cvel + self.dt[:, None, None] * cell_grad
            dr = dt_atoms * new_vel
            dr_cell = self.dt[:, None, None] * new_cvel
            if not relax_cell:
                dr_cell = np.zeros_like(dr_cell)
            normdr = np.sqrt(per_structure(dr * dr, dr_cell * dr_cell))
            limit = normdr > _MAXSTEP
            dr = np.where(limit[owner][:, None], _MAXSTEP * dr / normdr[owner][:, None], dr)
            dr_cell = np.where(
                limit[:, None, None], _MAXSTEP * dr_cell / normdr[:, None, None], dr_cell
            )
            self.velocity = np.where(step_atoms[:, None], new_vel, vel)
            self.cell_velocity = np.where(stepping[:, None, None], new_cvel, cvel)
            if relax_cell:
                self._move_with_cell(dr, dr_cell, stepping, errors)
            else:
                self._move_atoms(dr, stepping)
        return errors

    def _move_atoms(self, dr: FloatArray, stepping: NDArray[np.bool_]) -> None:
        """``atoms.set_positions(r + dr)`` at fixed cell (FixSymmetry adjusts the step)."""
        positions = self.positions
        new = positions + dr
        if self.structures[0].symmetry is not None:
            step = new - positions
            new = positions + self._symmetrize_rank1(step, self.cell, np.linalg.inv(self.cell))
        self.positions = np.where(stepping[self.owner][:, None], new, positions)

    def _move_with_cell(
        self,
        dr: FloatArray,
        dr_cell: FloatArray,
        stepping: NDArray[np.bool_],
        errors: NDArray[np.object_],
    ) -> None:
        """``FrechetCellFilter.set_positions(get_positions() + dr)`` for every structure."""
        owner = self.owner
        cell = self.cell
        positions = self.positions
        deform = np.linalg.solve(self.reference_cell, cell).transpose(0, 2, 1)
        # get_positions: atoms in the undeformed cell; the log coordinate is carried
        undeformed = (positions[:, None, :] @ np.linalg.inv(deform).transpose(0, 2, 1)[owner])[
            :, 0, :
        ]
        new_log = self.log_deform + dr_cell / self.n_float[:, None, None]
        new_deform = expm(new_log)
        new_deform_t = _EYE3 + (new_deform - _EYE3).transpose(0, 2, 1)
        new_cell = self.reference_cell @ new_deform_t
        new_positions = ((undeformed + dr)[:, None, :] @ new_deform_t[owner])[:, 0, :]
        refresh = np.zeros(len(cell), dtype=bool)
        if self.structures[0].symmetry is not None:
            # FixSymmetry.adjust_cell on set_cell(new_cell, scale_atoms=True) ...
            inverse = np.linalg.inv(cell)
            delta = (inverse @ new_cell).transpose(0, 2, 1) - _EYE3
            largest = np.abs(delta).max(axis=(1, 2))
            for b in np.flatnonzero(stepping & (largest > _CELL_STEP_ERROR)):
                errors[b] = (
                    "RuntimeError: FixSymmetry adjust_cell does not work properly with large "
                    f"deformation gradient step {largest[b]} > 0.25"
                )
            for b in np.flatnonzero(
                stepping & (largest > _CELL_STEP_WARNING) & (largest <= _CELL_STEP_ERROR)
            ):
                warnings.warn(
                    "FixSymmetry adjust_cell may be ill behaved with large deformation "
                    f"gradient step {largest[b]}",
                    stacklevel=2,
                )
            delta = symmetrize_rank2(cell, inverse, delta, self.rank2)
            adjusted = cell @ (delta + _EYE3).transpose(0, 2, 1)
            # ... which scales the atoms with the adjusted cell; then adjust_positions
            scale = np.linalg.solve(cell, adjusted)
            scaled = (positions[:, None, :] @ scale[owner])[:, 0, :]
            step = new_positions - scaled
            new_positions = scaled + self._symmetrize_rank1(step, adjusted, np.linalg.inv(adjusted))
            actual = np.linalg.solve(self.reference_cell, adjusted).transpose(0, 2, 1)
            refresh = stepping & (np.abs(actual - new_deform).max(axis=(1, 2)) > _LOGM_REFRESH)
            new_cell = adjusted
            for b in np.flatnonzero(refresh):
                new_log[b] = np.real(scipy.linalg.logm(actual[b]))
        ok = stepping & (errors == "")
        self.cell = np.where(ok[:, None, None], new_cell, cell)
        self.log_deform = np.where(ok[:, None, None], new_log, self.log_deform)
        self.positions = np.where(ok[owner][:, None], new_positions, positions)
