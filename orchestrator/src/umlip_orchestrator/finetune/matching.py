"""Match a labelled frame (from a DFT code) to an exported configuration by structure.

A DFT code may hand back a structure with its atoms in another order (POSCAR groups
species), its cell in an equivalent setting (another basis of the same lattice) or
rotated, and positions wrapped into the cell. :func:`match_frame` finds the
configuration with the same composition whose lattice equals the frame's up to a
unimodular change of basis and a proper rotation, and whose atoms coincide one to one
(same species, minimum-image distance within a tolerance). The match carries what is
needed to bring the frame's labels into the configuration's frame and atom order:
``forces_c[perm] = forces_l @ R.T`` and ``stress_c = R stress_l R.T``, with R the
rotation from the frame's Cartesian axes to the configuration's.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build.tools import niggli_reduce_cell
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class Tolerance:
    """How close a frame must be to a configuration, in Å.

    Attributes:
        cell_a: largest difference of a lattice vector after the change of basis.
        position_a: largest minimum-image distance between paired atoms.
    """

    cell_a: float = 2e-3
    position_a: float = 2e-3


@dataclass(frozen=True)
class Match:
    """A frame matched to configuration ``index``.

    Attributes:
        index: position of the configuration in the list searched.
        permutation: ``permutation[i]`` is the configuration atom of frame atom ``i``.
        rotation: (3, 3) proper rotation R with ``v_config = R @ v_frame`` (columns).
        max_distance_a: largest distance between paired atoms, Å.
    """

    index: int
    permutation: np.ndarray
    rotation: np.ndarray
    max_distance_a: float


def _unimodular_matrices() -> np.ndarray:
    """Every 3x3 matrix with entries in {-1, 0, 1} and determinant +-1."""
    candidates = np.array(list(itertools.product((-1, 0, 1), repeat=9)), dtype=float)
    candidates = candidates.reshape(-1, 3, 3)
    return candidates[np.isclose(np.abs(np.linalg.det(candidates)), 1.0)]


_UNIMODULAR = _unimodular_matrices()


def lattice_rotations(
    config_cell: np.ndarray, frame_cell: np.ndarray, tol: float
) -> list[np.ndarray]:
    """Proper rotations R (column convention) taking the frame's lattice onto the
    configuration's: every frame lattice vector v satisfies ``R @ v`` in the
    configuration's lattice (within ``tol`` Å per vector).

    The same Cartesian frame (R = I, any equivalent basis) is tried first; then the
    Niggli-reduced cells are compared under every unimodular change of basis with
    entries in {-1, 0, 1}, which covers rotated cells.
    """
    c = np.asarray(config_cell, dtype=float)
    f = np.asarray(frame_cell, dtype=float)
    basis = np.rint(f @ np.linalg.inv(c))
    if np.isclose(abs(np.linalg.det(basis)), 1.0) and np.abs(basis @ c - f).max() < tol:
        return [np.eye(3)]
    # niggli_reduce_cell returns the reduced cell in a standard orientation; its
    # integer operation gives the reduced basis in the original Cartesian frame.
    c_reduced = niggli_reduce_cell(c)[1] @ c
    f_reduced = niggli_reduce_cell(f)[1] @ f
    bases = _UNIMODULAR @ c_reduced  # (K, 3, 3): candidate config bases
    metric = np.einsum("kij,klj->kil", bases, bases)
    scale = max(1.0, float(np.abs(f_reduced).max()))
    close = np.abs(metric - f_reduced @ f_reduced.T).max(axis=(1, 2)) < 2 * tol * scale
    rotations = []
    for candidate in bases[close]:
        q = np.linalg.solve(candidate, f_reduced)  # frame rows = candidate rows @ q
        # rows: v_frame = v_config @ q, so for columns v_config = q @ v_frame
        proper = np.abs(q.T @ q - np.eye(3)).max() < tol / scale and np.linalg.det(q) > 0
        if proper and not any(np.allclose(q, r, atol=1e-6) for r in rotations):
            rotations.append(q)
    return rotations


def pair_atoms(
    config: Atoms, frame: Atoms, rotation: np.ndarray, tol: float
) -> tuple[np.ndarray, float] | None:
    """Pairs each frame atom with a configuration atom of the same species.

    Returns:
        (permutation, largest distance in Å), or None when some atom has no partner
        within ``tol``.
    """
    positions = frame.positions @ rotation.T
    cell = config.cell.array
    inverse = np.linalg.inv(cell)
    permutation = np.full(len(frame), -1)
    worst = 0.0
    for number in np.unique(config.numbers):
        ci = np.flatnonzero(config.numbers == number)
        fi = np.flatnonzero(frame.numbers == number)
        delta = (positions[fi][:, None, :] - config.positions[ci][None, :, :]) @ inverse
        delta -= np.rint(delta)
        distance = np.linalg.norm(delta @ cell, axis=-1)
        rows, cols = linear_sum_assignment(distance)
        largest = float(distance[rows, cols].max())
        if largest > tol:
            return None
        permutation[fi[rows]] = ci[cols]
        worst = max(worst, largest)
    return permutation, worst


def composition_key(atoms: Atoms) -> tuple[int, ...]:
    """Sorted atomic numbers: frames and configurations are only compared within a key."""
    return tuple(sorted(atoms.numbers.tolist()))


def match_frame(
    frame: Atoms,
    configs: Sequence[Atoms],
    candidates: Sequence[int],
    tol: Tolerance,
    taken: Collection[int] = (),
) -> tuple[Match | None, str]:
    """The best matching configuration among ``candidates`` (same composition).

    Symmetry can make several configurations the same structure up to a rotation (a
    +6 % and a -6 % shear of a cubic crystal): the labels then fit each of them once
    rotated. Preferred, in order: a configuration not yet labelled (``taken`` lists
    those that are), one in the frame's own Cartesian axes (no rotation), the closest.

    Returns:
        (match, "") or (None, why none matched).
    """
    best: Match | None = None
    best_key: tuple[bool, bool, float] | None = None
    volume = abs(frame.get_volume())
    cell_misses = 0
    closest_atoms = np.inf
    for index in candidates:
        config = configs[index]
        if abs(abs(config.get_volume()) - volume) > 3 * tol.cell_a * volume ** (2 / 3):
            cell_misses += 1
            continue
        rotations = lattice_rotations(config.cell.array, frame.cell.array, tol.cell_a)
        if not rotations:
            cell_misses += 1
            continue
        for rotation in rotations:
            paired = pair_atoms(config, frame, rotation, np.inf)
            if paired is None:
                continue
            permutation, distance = paired
            closest_atoms = min(closest_atoms, distance)
            key = (index in taken, not np.allclose(rotation, np.eye(3), atol=1e-9), distance)
            if distance <= tol.position_a and (best_key is None or key < best_key):
                best, best_key = Match(index, permutation, rotation, distance), key
    if best is not None:
        return best, ""
    if cell_misses == len(candidates):
        return None, (
            f"{len(candidates)} configurations share its composition, but none has its cell "
            f"(tolerance {tol.cell_a} Å)"
        )
    return None, (
        f"a configuration has its composition and cell, but the atoms differ by up to "
        f"{closest_atoms:.3g} Å (tolerance {tol.position_a} Å)"
    )
