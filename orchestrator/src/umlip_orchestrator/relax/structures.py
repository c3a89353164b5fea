"""One structure of the vectorized relaxation engine: its start, snapshots and results."""

from __future__ import annotations

from typing import Generic, TypeVar

import numpy as np
from ase import Atoms
from ase.cell import Cell
from numpy.typing import NDArray

from umlip_orchestrator.evaluation import Evaluation, StructureFailed
from umlip_orchestrator.relax.batching import checked_arrays, plain_copy
from umlip_orchestrator.relax.settings import RelaxResult, RelaxSettings
from umlip_orchestrator.relax.symmetry import SymmetryProjection, refine_symmetry

K = TypeVar("K")
FloatArray = NDArray[np.float64]
#: The attributes of an ``ase.Atoms`` the fast snapshot copies (others: ``Atoms.copy``).
ATOMS_FIELDS = frozenset(
    {"_calc", "_celldisp", "_cellobj", "_constraints", "_pbc", "arrays", "info"}
)


class Structure(Generic[K]):
    """One job: its key, the structure as it starts, and what it last evaluated.

    Attributes:
        key: the caller's key.
        template: the starting structure (refined with ``relax_cell`` + FixSymmetry),
            plain; snapshots for the evaluator are copies of it.
        n_atoms: number of atoms.
        symmetry: the FixSymmetry projections, or None.
        last: the last structure evaluated successfully (as sent), or None.
        last_energy, last_forces, last_stress: its evaluation.
    """

    def __init__(self, key: K, template: Atoms, symmetry: SymmetryProjection | None) -> None:
        self.key = key
        self.template = template
        self.n_atoms = len(template)
        self.symmetry = symmetry
        self.fast_copy = set(template.__dict__) == ATOMS_FIELDS
        self.last: Atoms | None = None
        self.last_energy = float("nan")
        self.last_forces: FloatArray | None = None
        self.last_stress: FloatArray | None = None

    @classmethod
    def start(cls, key: K, atoms: Atoms, settings: RelaxSettings) -> Structure[K]:
        """Copies ``atoms`` and prepares its symmetry as ``relax_structure`` does.

        Raises:
            ValueError: the structure is empty, or its cell is singular where it is used.
            Exception: anything the symmetry analysis raised.
        """
        template = plain_copy(atoms)
        if len(template) == 0:
            raise ValueError("the structure has no atoms")
        template.arrays["positions"] = np.array(template.positions, dtype=np.float64)
        needs_cell = settings.relax_cell or settings.fix_symmetry
        if needs_cell and abs(np.linalg.det(template.cell[:])) < 1e-12:
            raise ValueError("the cell is singular; a periodic 3D cell is needed")
        symmetry = None
        if settings.fix_symmetry:
            if settings.relax_cell:  # FixSymmetry(atoms) refines atoms themselves
                refine_symmetry(template, settings.symprec)
                symmetry = SymmetryProjection.of(template, settings.symprec)
            else:  # FixSymmetry(atoms.copy(), adjust_cell=False): the copy is refined
                reference = template.copy()
                refine_symmetry(reference, settings.symprec)
                symmetry = SymmetryProjection.of(reference, settings.symprec)
        return cls(key, template, symmetry)

    def snapshot(self, positions: FloatArray, cell: FloatArray) -> Atoms:
        """A fresh plain copy of the template at ``positions`` and ``cell``."""
        template = self.template
        if not self.fast_copy:
            atoms = template.copy()
            atoms.arrays["positions"] = positions
            atoms.cell.array[:] = cell
            return atoms
        # What Atoms.copy() does, without re-running Atoms.__init__ (about 7x faster).
        atoms = Atoms.__new__(Atoms)
        arrays = {name: value.copy() for name, value in template.arrays.items()}
        arrays["positions"] = positions
        atoms.__dict__.update(
            _calc=None,
            _celldisp=template._celldisp.copy(),
            _cellobj=Cell(cell),
            _constraints=[],
            _pbc=template._pbc.copy(),
            arrays=arrays,
            info=dict(template.info),
        )
        return atoms


def parse_outcome(
    outcome: Evaluation | StructureFailed, n_atoms: int
) -> tuple[str | None, tuple[float, FloatArray, FloatArray] | None]:
    """Checks one evaluator outcome as ``EvaluationCalculator`` does.

    Returns:
        (None, (energy, forces, stress)) or (why it failed, None).
    """
    if isinstance(outcome, StructureFailed):
        return f"{outcome.code}: {outcome}", None
    try:
        return None, checked_arrays(outcome, n_atoms)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}", None


def failure_result(structure: Structure[K], steps: int, error: str) -> RelaxResult:
    """A failed structure's result: its last evaluated state, or the start and NaN."""
    if structure.last is None or structure.last_forces is None:
        return nan_result(plain_copy(structure.template), steps, error)
    assert structure.last_stress is not None
    return RelaxResult(
        atoms=plain_copy(structure.last),
        converged=False,
        steps=steps,
        energy=structure.last_energy,
        forces=structure.last_forces.copy(),
        stress=structure.last_stress.copy(),
        error=error,
    )


def nan_result(atoms: Atoms, steps: int, error: str) -> RelaxResult:
    """A failed result of a structure never evaluated."""
    return RelaxResult(
        atoms=atoms,
        converged=False,
        steps=steps,
        energy=float("nan"),
        forces=np.full((len(atoms), 3), np.nan),
        stress=np.full(6, np.nan),
        error=error,
    )
