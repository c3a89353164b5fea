"""The in-memory form of a ragged batch and of its per-structure results.

A batch of S structures with N atoms in all is held as flat numpy arrays, atoms of all
structures concatenated in structure order (the layout of the wire format):

- ``atomic_numbers``: (N,) int64
- ``positions``: (N, 3) float64, Å
- ``cells``: (S, 3, 3) float64, row vectors, Å
- ``pbc``: (S, 3) bool
- ``atoms_per_structure``: (S,) int64
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

#: 1 eV/Å^3 in GPa (SCIENCE.md): the one conversion adapters use (wire stress is eV/Å^3).
GPA_PER_EV_PER_A3 = 160.21766208


class Property(enum.Enum):
    """A property a potential computes; values are the wire enum's names."""

    ENERGY = "energy"
    FORCES = "forces"
    STRESS = "stress"


ALL_PROPERTIES: tuple[Property, ...] = (Property.ENERGY, Property.FORCES, Property.STRESS)


@dataclass(frozen=True, eq=False)
class StructureBatch:
    """A ragged batch of structures as flat arrays (see the module docstring).

    Arrays are made read-only on construction, so an adapter cannot modify its input.
    """

    atomic_numbers: NDArray[np.int64]
    positions: NDArray[np.float64]
    cells: NDArray[np.float64]
    pbc: NDArray[np.bool_]
    atoms_per_structure: NDArray[np.int64]
    offsets: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        offsets = np.concatenate([[0], np.cumsum(self.atoms_per_structure)]).astype(np.int64)
        object.__setattr__(self, "offsets", offsets)
        for array in (
            self.atomic_numbers,
            self.positions,
            self.cells,
            self.pbc,
            self.atoms_per_structure,
            self.offsets,
        ):
            array.flags.writeable = False

    @property
    def n_structures(self) -> int:
        """Number of structures S."""
        return len(self.atoms_per_structure)

    @property
    def n_atoms(self) -> int:
        """Total number of atoms N."""
        return int(self.offsets[-1])

    def atom_slice(self, index: int) -> slice:
        """The rows of structure ``index`` in the per-atom arrays."""
        return slice(int(self.offsets[index]), int(self.offsets[index + 1]))

    def select(self, indices: Sequence[int]) -> StructureBatch:
        """A new batch with the structures at ``indices``, in that order."""
        rows = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices]
        atom_rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        index = np.asarray(indices, dtype=np.int64)
        return StructureBatch(
            atomic_numbers=self.atomic_numbers[atom_rows].copy(),
            positions=self.positions[atom_rows].copy(),
            cells=self.cells[index].copy(),
            pbc=self.pbc[index].copy(),
            atoms_per_structure=self.atoms_per_structure[index].copy(),
        )

    @staticmethod
    def concatenate(batches: Sequence[StructureBatch]) -> StructureBatch:
        """Joins batches into one, structures in order."""
        return StructureBatch(
            atomic_numbers=np.concatenate([b.atomic_numbers for b in batches]),
            positions=np.concatenate([b.positions for b in batches]),
            cells=np.concatenate([b.cells for b in batches]),
            pbc=np.concatenate([b.pbc for b in batches]),
            atoms_per_structure=np.concatenate([b.atoms_per_structure for b in batches]),
        )

    @staticmethod
    def from_arrays(
        *,
        atomic_numbers: Sequence[NDArray[np.integer]],
        positions: Sequence[NDArray[np.floating]],
        cells: Sequence[NDArray[np.floating]],
        pbc: Sequence[NDArray[np.bool_] | Sequence[bool]],
    ) -> StructureBatch:
        """Builds a batch from per-structure arrays (the inverse of :meth:`structure`)."""
        counts = np.array([len(z) for z in atomic_numbers], dtype=np.int64)
        return StructureBatch(
            atomic_numbers=np.concatenate(atomic_numbers).astype(np.int64),
            positions=np.concatenate(positions).astype(np.float64).reshape(-1, 3),
            cells=np.asarray(cells, dtype=np.float64).reshape(-1, 3, 3),
            pbc=np.asarray(pbc, dtype=bool).reshape(-1, 3),
            atoms_per_structure=counts,
        )

    def structure(
        self, index: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
        """(atomic_numbers (n,), positions (n, 3) Å, cell (3, 3) Å, pbc (3,)) of one structure."""
        rows = self.atom_slice(index)
        return self.atomic_numbers[rows], self.positions[rows], self.cells[index], self.pbc[index]


class StructureErrorCode(enum.Enum):
    """Why one structure failed; values are the wire enum's suffixes."""

    INVALID_STRUCTURE = "INVALID_STRUCTURE"
    UNSUPPORTED_ELEMENT = "UNSUPPORTED_ELEMENT"
    CALCULATION_FAILED = "CALCULATION_FAILED"


@dataclass(frozen=True)
class StructureError:
    """An in-band failure of one structure."""

    code: StructureErrorCode
    message: str


@dataclass(frozen=True, eq=False)
class StructureOutput:
    """The computed properties of one structure; a property not requested is None.

    Attributes:
        energy: total energy, eV.
        forces: (n_atoms, 3) eV/Å.
        stress: (6,) eV/Å^3, Voigt xx yy zz yz xz xy, ASE sign (tensile positive).
    """

    energy: float | None = None
    forces: NDArray[np.float64] | None = None
    stress: NDArray[np.float64] | None = None


#: The result of one structure: its properties or its error.
StructureResult = StructureOutput | StructureError


def fill_missing(results: Sequence[StructureResult | None]) -> list[StructureResult]:
    """One result per structure: a slot an adapter left None becomes an in-band error.

    Adapters fill a ``[None] * n_structures`` list; never drop the Nones (that shifts
    every later result onto the wrong structure).
    """
    return [
        result
        if result is not None
        else StructureError(
            code=StructureErrorCode.CALCULATION_FAILED,
            message="the model produced no result for this structure",
        )
        for result in results
    ]


def chunk_by_budget(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive index groups whose sizes sum to at most ``budget``.

    An item larger than the budget forms a group of its own. Adapters use it to cap
    one forward pass (e.g. by graph edges) while still batching.
    """
    chunks: list[list[int]] = []
    total = 0
    for index, size in enumerate(sizes):
        if chunks and total + size <= budget:
            chunks[-1].append(index)
            total += size
        else:
            chunks.append([index])
            total = size
    return chunks
