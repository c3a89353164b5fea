"""Conversion between ASE ``Atoms`` and :class:`StructureBatch` (both directions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from umlip_wire.batch import StructureBatch


def atoms_to_batch(structures: Sequence[Atoms]) -> StructureBatch:
    """Packs ASE structures into one ragged batch (positions Å, cells as row vectors)."""
    if not structures:
        raise ValueError("cannot build a batch of zero structures")
    return StructureBatch.from_arrays(
        atomic_numbers=[a.get_atomic_numbers() for a in structures],
        positions=[a.get_positions() for a in structures],
        cells=[np.asarray(a.get_cell()) for a in structures],
        pbc=[a.get_pbc() for a in structures],
    )


def batch_to_atoms(batch: StructureBatch) -> list[Atoms]:
    """Unpacks a batch into independent ASE ``Atoms`` (copies, no calculator)."""
    structures = []
    for index in range(batch.n_structures):
        numbers, positions, cell, pbc = batch.structure(index)
        structures.append(
            Atoms(numbers=numbers.copy(), positions=positions.copy(), cell=cell.copy(), pbc=pbc)
        )
    return structures
