"""FixSymmetry's projections for the vectorized relaxation engine, precomputed once.

The space group operations and atom mapping of a structure are found with spglib
exactly as ASE's ``FixSymmetry`` finds them (``prep_symmetry``); its rank-1 projection
becomes a sparse matrix over the structure's scaled coordinates and its rank-2
projection a 9x9 matrix, so a step applies them to every structure at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class SymmetryProjection:
    """FixSymmetry's projections of one structure, precomputed once.

    Attributes:
        row_lengths: (3n,) entries per row of the rank-1 projection (CSR row lengths).
        columns: column (3 * atom + component) of each entry, in row order.
        values: value of each entry (averaged over the operations).
        rank2: (9, 9) the rank-2 projection of ``lattice @ X @ lattice.T``, row-major.
    """

    row_lengths: IntArray
    columns: IntArray
    values: FloatArray
    rank2: FloatArray

    @classmethod
    def of(cls, atoms: Atoms, symprec: float) -> SymmetryProjection:
        """The operations of ``atoms`` (already refined) as ASE's ``prep_symmetry`` finds them.

        Raises:
            RuntimeError: spglib found no symmetry dataset.
        """
        from ase.spacegroup.symmetrize import check_symmetry

        dataset = check_symmetry(atoms, symprec=symprec)  # prep_symmetry's spglib call
        if dataset is None:
            raise RuntimeError(f"spglib found no symmetry for {atoms.get_chemical_formula()}")
        rotations = np.asarray(dataset.rotations, dtype=np.float64)
        translations = np.asarray(dataset.translations, dtype=np.float64)
        mapping = symmetry_map(atoms.get_scaled_positions(), rotations, translations)
        n_ops, n_atoms = mapping.shape
        size = 3 * n_atoms
        # symmetrize_rank1: out[map_k[j]] += r_k @ scaled[j], averaged over the k.
        comp = np.arange(3)
        rows = 3 * mapping[:, :, None, None] + comp[None, None, :, None]
        cols = 3 * np.arange(n_atoms)[None, :, None, None] + comp[None, None, None, :]
        flat = (rows * size + cols).ravel()
        weights = np.broadcast_to(rotations[:, None, :, :], (n_ops, n_atoms, 3, 3)).ravel()
        dense = np.bincount(flat, weights=weights, minlength=size * size) / n_ops
        present = np.bincount(flat, minlength=size * size) > 0
        dense = dense.reshape(size, size)
        present = present.reshape(size, size)
        # symmetrize_rank2: mean over k of r_k.T @ S @ r_k, as a map on the 9 entries of S.
        rank2 = np.einsum("kba,kcd->adbc", rotations, rotations).reshape(9, 9) / n_ops
        return cls(
            row_lengths=present.sum(axis=1).astype(np.int64),
            columns=np.nonzero(present)[1].astype(np.int64),
            values=dense[present],
            rank2=rank2,
        )


def symmetry_map(scaled: FloatArray, rotations: FloatArray, translations: FloatArray) -> IntArray:
    """``prep_symmetry``'s atom mapping: the image of each atom under each operation."""
    n_atoms = len(scaled)
    images = np.einsum("kab,nb->kna", rotations, scaled) + translations[:, None, :]
    chunk = max(1, 200_000 // max(1, n_atoms * n_atoms))
    parts = []
    for first in range(0, len(rotations), chunk):
        dp = scaled[None, None, :, :] - images[first : first + chunk, :, None, :]
        dp -= np.round(dp)
        parts.append(np.argmin(np.linalg.norm(dp, axis=-1), axis=-1))
    return np.concatenate(parts).astype(np.int64)


def refine_symmetry(atoms: Atoms, symprec: float) -> None:
    """Refines the cell and positions of ``atoms`` in place, as ``FixSymmetry`` does.

    ASE's ``refine_symmetry`` without its final check at 1e-4 (one spglib call whose
    result only ASE's verbose mode uses).
    """
    try:
        from ase.spacegroup.symmetrize import (
            _check_and_symmetrize_cell,
            _check_and_symmetrize_positions,
        )
    except ImportError:  # pragma: no cover - another ASE version: the public function
        from ase.spacegroup.symmetrize import refine_symmetry

        refine_symmetry(atoms, symprec)
        return
    _check_and_symmetrize_cell(atoms, symprec=symprec)
    _check_and_symmetrize_positions(atoms, symprec=symprec)
