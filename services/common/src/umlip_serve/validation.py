"""Per-structure checks run by the harness before a structure reaches a model.

A structure failing a check gets an in-band :class:`StructureError`; the rest of its
batch goes on.
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np
from ase.data import chemical_symbols
from ase.neighborlist import primitive_neighbor_list

from umlip_serve.batch import StructureBatch, StructureError, StructureErrorCode

#: Atoms closer than this (Å) make a structure invalid.
MIN_INTERATOMIC_DISTANCE = 0.1
#: Periodic cells with |det| below this (Å^3) are singular.
MIN_CELL_VOLUME = 1e-6
MAX_ATOMIC_NUMBER = 118


def _invalid(message: str) -> StructureError:
    return StructureError(code=StructureErrorCode.INVALID_STRUCTURE, message=message)


def check_structure(
    batch: StructureBatch, index: int, supported: Set[int], model_name: str
) -> StructureError | None:
    """Returns why structure ``index`` cannot be computed, or None if it can."""
    numbers, positions, cell, pbc = batch.structure(index)
    bad_z = numbers[(numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)]
    if bad_z.size:
        return _invalid(f"atomic number {int(bad_z[0])} is outside 1..{MAX_ATOMIC_NUMBER}")
    if not np.all(np.isfinite(positions)):
        return _invalid("positions contain NaN or infinite values")
    if not np.all(np.isfinite(cell)):
        return _invalid("cell contains NaN or infinite values")
    volume = abs(float(np.linalg.det(cell)))
    if pbc.any() and volume < MIN_CELL_VOLUME:
        return _invalid(f"periodic cell is singular (volume {volume:.3g} Å^3)")
    unsupported = sorted(set(numbers.tolist()) - set(supported))
    if unsupported:
        names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unsupported)
        return StructureError(
            code=StructureErrorCode.UNSUPPORTED_ELEMENT,
            message=f"element {names} is not supported by {model_name}",
        )
    closest = _closest_pair(positions, cell, pbc)
    if closest is not None:
        i, j, distance = closest
        return _invalid(
            f"atoms {i} and {j} are {distance:.3g} Å apart (minimum {MIN_INTERATOMIC_DISTANCE} Å)"
        )
    return None


#: Above this many atoms, or for strongly skewed cells, use ASE's neighbour list.
_DENSE_CHECK_MAX_ATOMS = 256


def _closest_pair(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> tuple[int, int, float] | None:
    """The closest pair of atoms nearer than the minimum distance, if any."""
    if not pbc.any():
        # A non-periodic structure may carry a zero cell: use a box around the atoms.
        span = np.ptp(positions, axis=0) if len(positions) else np.zeros(3)
        cell = np.diag(span + 1.0)
        positions = positions - positions.min(axis=0)
    if len(positions) <= _DENSE_CHECK_MAX_ATOMS and _well_shaped(cell, pbc):
        return _closest_pair_dense(positions, cell, pbc)
    first, second, distance = primitive_neighbor_list(
        "ijd", pbc, cell, positions, MIN_INTERATOMIC_DISTANCE, self_interaction=False
    )
    if len(distance) == 0:
        return None
    k = int(np.argmin(distance))
    return int(first[k]), int(second[k]), float(distance[k])


def _well_shaped(cell: np.ndarray, pbc: np.ndarray) -> bool:
    """Whether the periodic cell vectors meet at angles within 60..120 degrees."""
    vectors = cell[pbc]
    lengths = np.linalg.norm(vectors, axis=1)
    cosines = (vectors @ vectors.T) / np.outer(lengths, lengths)
    return bool(np.all(np.abs(cosines[np.triu_indices(len(vectors), 1)]) <= 0.5))


def _closest_pair_dense(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> tuple[int, int, float] | None:
    """All pairs at once: wrapped fractional differences plus the neighbouring images.

    Exact for cells whose vectors meet at 60..120 degrees: there the nearest image of a
    pair closer than 0.1 Å lies within one cell of the wrapped difference.
    """
    fractional = np.linalg.solve(cell.T, positions.T).T
    delta = fractional[None, :, :] - fractional[:, None, :]
    delta[..., pbc] -= np.round(delta[..., pbc])
    axes = [np.array([-1, 0, 1]) if periodic else np.array([0]) for periodic in pbc]
    shifts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    images = (delta[:, :, None, :] + shifts[None, None, :, :]) @ cell
    distances = np.linalg.norm(images, axis=-1)
    n = len(positions)
    zero_shift = int(np.flatnonzero(~shifts.any(axis=1))[0])
    distances[np.arange(n), np.arange(n), zero_shift] = np.inf  # an atom with itself
    close = np.argwhere(distances < MIN_INTERATOMIC_DISTANCE)
    if len(close) == 0:
        return None
    i, j, s = close[np.argmin(distances[tuple(close.T)])]
    return int(min(i, j)), int(max(i, j)), float(distances[i, j, s])


def check_output(
    result_energy: float | None, forces: np.ndarray | None, stress: np.ndarray | None, n: int
) -> str | None:
    """Why a model's output for one structure is unusable (shape or non-finite), or None."""
    if result_energy is not None and not np.isfinite(result_energy):
        return "model returned a non-finite energy"
    if forces is not None:
        if forces.shape != (n, 3):
            return f"model returned forces of shape {forces.shape}, expected ({n}, 3)"
        if not np.all(np.isfinite(forces)):
            return "model returned non-finite forces"
    if stress is not None:
        if stress.shape != (6,):
            return f"model returned stress of shape {stress.shape}, expected (6,)"
        if not np.all(np.isfinite(stress)):
            return "model returned non-finite stress"
    return None
