"""Settings, results and counters of a relaxation (SCIENCE.md, section 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from numpy.typing import NDArray


@dataclass(frozen=True)
class RelaxSettings:
    """How a structure is relaxed; store it with every result it produced.

    Attributes:
        fmax: convergence threshold, eV/Å. ASE's criterion on the optimised object: every
            atomic force and, with ``relax_cell``, every cell "force" of the
            FrechetCellFilter (virial = stress x volume, divided by the number of atoms,
            eV) must be below it.
        max_steps: at most this many FIRE steps (so at most ``max_steps + 1`` evaluations);
            a relaxation that has not converged by then is a result with
            ``converged=False``.
        relax_cell: True relaxes positions and cell together (FIRE on a
            ``FrechetCellFilter``); False relaxes positions only at a fixed cell (the
            relaxed-ion deformations).
        fix_symmetry: keep the space group found at the start (``ase.constraints.FixSymmetry``).
        symprec: symmetry tolerance handed to ``FixSymmetry`` (spglib), Å. ASE's default.
    """

    fmax: float = 0.1
    max_steps: int = 500
    relax_cell: bool = True
    fix_symmetry: bool = True
    symprec: float = 1e-2

    def __post_init__(self) -> None:
        if isinstance(self.fmax, bool) or not isinstance(self.fmax, int | float):
            raise TypeError(f"fmax must be a number, got {self.fmax!r}")
        if not (math.isfinite(self.fmax) and self.fmax > 0):
            raise ValueError(f"fmax must be a positive finite number, got {self.fmax}")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int):
            raise TypeError(f"max_steps must be an int, got {self.max_steps!r}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        for name in ("relax_cell", "fix_symmetry"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if isinstance(self.symprec, bool) or not isinstance(self.symprec, int | float):
            raise TypeError(f"symprec must be a number, got {self.symprec!r}")
        if not (math.isfinite(self.symprec) and self.symprec > 0):
            raise ValueError(f"symprec must be a positive finite number, got {self.symprec}")


@dataclass(frozen=True, eq=False)
class RelaxResult:
    """The outcome of relaxing one structure.

    Attributes:
        atoms: the relaxed structure, a copy without calculator or constraints. On
            failure, the last structure the potential evaluated (or the input if none was).
        converged: True when ASE's criterion was met within ``max_steps``.
        steps: FIRE steps taken.
        energy: energy of ``atoms``, eV (NaN if it was never evaluated).
        forces: (n_atoms, 3) forces on ``atoms`` as the potential returned them (not
            symmetrised), eV/Å (NaN if never evaluated).
        stress: (6,) stress of ``atoms`` as the potential returned it, eV/Å^3, Voigt
            xx yy zz yz xz xy, ASE sign (NaN if never evaluated).
        error: None on success (converged or not); otherwise why the structure failed,
            e.g. ``"UNSUPPORTED_ELEMENT: ..."`` from the potential or an exception raised
            in the optimiser.
    """

    atoms: Atoms
    converged: bool
    steps: int
    energy: float
    forces: NDArray[np.float64]
    stress: NDArray[np.float64]
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the structure did not fail (it may still be unconverged)."""
        return self.error is None


@dataclass
class LockstepStats:
    """Counters of one or more :func:`relax_in_lockstep` runs (mutable, updated in place).

    Only the thread iterating the generator updates it.

    Attributes:
        evaluate_calls: number of calls of the batch evaluator.
        structures_evaluated: structures sent over all those calls.
        largest_batch: largest number of structures in one call.
        evaluate_seconds: wall time spent inside the evaluator, s.
    """

    evaluate_calls: int = 0
    structures_evaluated: int = 0
    largest_batch: int = 0
    evaluate_seconds: float = 0.0

    @property
    def mean_batch_size(self) -> float:
        """Mean number of structures per evaluator call (0.0 before the first call)."""
        if self.evaluate_calls == 0:
            return 0.0
        return self.structures_evaluated / self.evaluate_calls

    def record(self, batch_size: int, seconds: float) -> None:
        """Counts one evaluator call of ``batch_size`` structures that took ``seconds``."""
        self.evaluate_calls += 1
        self.structures_evaluated += batch_size
        self.largest_batch = max(self.largest_batch, batch_size)
        self.evaluate_seconds += seconds
