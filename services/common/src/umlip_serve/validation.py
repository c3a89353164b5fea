"""Per-structure checks the harness runs before and after a structure reaches a model.

A structure failing a check gets an in-band :class:`StructureError`; the rest of its
batch goes on. Before the model (:func:`check_structure`): sane numbers, a cell whose
neighbour search stays bounded, no overlapping atoms, supported elements. After it
(:func:`check_results`): one result per structure, only the requested properties, of
the right shapes and finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence, Set

import numpy as np
from ase.data import chemical_symbols
from ase.neighborlist import primitive_neighbor_list

from umlip_wire.batch import (
    Property,
    StructureBatch,
    StructureError,
    StructureErrorCode,
    StructureOutput,
    StructureResult,
)
from umlip_wire.errors import AdapterContractError

#: Atoms closer than this (Å) make a structure invalid.
MIN_INTERATOMIC_DISTANCE = 0.1
#: Periodic cells with |det| below this (Å^3) are singular.
MIN_CELL_VOLUME = 1e-6
MAX_ATOMIC_NUMBER = 118
#: Largest |coordinate| or |cell entry| accepted, Å (1 mm: far beyond any simulation
#: cell; larger values only lose float64 precision and make meaningless answers).
MAX_COORDINATE = 1e6
#: Most atoms per Å^3 in a periodic cell. The densest real solids hold ~0.18 (diamond
#: 0.176, osmium 0.072); 0.5 leaves room for strong compression while bounding the
#: neighbours per atom of a model with cutoff rc to 0.5 * 4/3 π rc^3 (~450 at 6 Å; at
#: 0.69 atoms/Å^3 a 16-atom cell already took CHGNet 8 s on one CPU thread).
MAX_ATOM_DENSITY = 0.5
#: Farthest an atom may lie outside its periodic cell, in cells along a periodic axis.
#: Unwrapped positions are legal, but neighbour searches (CHGNet's) slow down with the
#: distance: an atom ~1.5e5 cells out hung a CHGNet server for minutes.
MAX_CELLS_AWAY = 100.0
#: Most periodic images of the cell within the cutoff, the product over periodic axes
#: of (2 ceil(rc / h) + 1), h being the cell's height along that axis. A 1-atom cubic
#: cell of 1 Å needs 13^3 = 2197 at rc = 6 Å; badly skewed (unreduced) or tiny cells
#: need millions and would make the neighbour search explode.
MAX_PERIODIC_IMAGES = 100_000
#: Cutoff assumed for the image bound when the model reports none (0), Å.
DEFAULT_CUTOFF = 6.0


def _invalid(message: str) -> StructureError:
    return StructureError(code=StructureErrorCode.INVALID_STRUCTURE, message=message)


def check_structure(
    batch: StructureBatch,
    index: int,
    supported: Set[int],
    model_name: str,
    cutoff: float = 0.0,
    *,
    stress: bool = False,
    needs_full_periodicity: bool = False,
) -> StructureError | None:
    """Returns why structure ``index`` cannot be computed, or None if it can.

    Args:
        batch: the decoded request batch.
        index: which structure.
        supported: atomic numbers the model handles.
        model_name: for messages.
        cutoff: the model's interaction cutoff, Å (0: unknown, :data:`DEFAULT_CUTOFF`).
        stress: stress is requested (undefined unless periodic in all directions).
        needs_full_periodicity: the model computes only fully periodic structures.
    """
    numbers, positions, cell, pbc = batch.structure(index)
    bad_z = numbers[(numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)]
    if bad_z.size:
        return _invalid(f"atomic number {int(bad_z[0])} is outside 1..{MAX_ATOMIC_NUMBER}")
    if not np.all(np.isfinite(positions)):
        return _invalid("positions contain NaN or infinite values")
    if not np.all(np.isfinite(cell)):
        return _invalid("cell contains NaN or infinite values")
    if np.any(np.abs(positions) > MAX_COORDINATE):
        return _invalid(f"positions exceed {MAX_COORDINATE:.0e} Å in magnitude")
    if np.any(np.abs(cell) > MAX_COORDINATE):
        return _invalid(f"cell entries exceed {MAX_COORDINATE:.0e} Å in magnitude")
    if not pbc.all():
        if needs_full_periodicity:
            return _invalid(f"{model_name} needs a structure periodic in all three directions")
        if stress:
            return _invalid(
                "stress is undefined for a structure that is not periodic in all three directions"
            )
    volume = abs(float(np.linalg.det(cell)))
    if pbc.any() and volume < MIN_CELL_VOLUME:
        return _invalid(f"periodic cell is singular (volume {volume:.3g} Å^3)")
    bounded = _check_bounded_work(len(numbers), cell, pbc, volume, cutoff or DEFAULT_CUTOFF)
    if bounded is None and pbc.any():
        bounded = _check_wrapped(positions, cell, pbc)
    if bounded is not None:
        return bounded
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


def _check_wrapped(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> StructureError | None:
    """Rejects atoms more than :data:`MAX_CELLS_AWAY` cells outside a periodic cell."""
    try:
        scaled = np.linalg.solve(cell.T, positions.T).T
    except np.linalg.LinAlgError:
        return None  # a singular cell is reported by the other checks
    away = np.abs(scaled[:, pbc] - 0.5)
    if away.size and float(away.max()) > MAX_CELLS_AWAY:
        atom = int(np.unravel_index(int(np.argmax(away)), away.shape)[0])
        return _invalid(
            f"atom {atom} lies {float(away.max()):.3g} cells outside the periodic cell "
            f"(at most {MAX_CELLS_AWAY:g}); wrap the positions into the cell (ase: atoms.wrap())"
        )
    return None


def _check_bounded_work(
    n_atoms: int, cell: np.ndarray, pbc: np.ndarray, volume: float, cutoff: float
) -> StructureError | None:
    """Rejects periodic cells whose neighbour search within ``cutoff`` would explode."""
    if pbc.all():
        density = n_atoms / volume
        if density > MAX_ATOM_DENSITY:
            neighbours = density * 4.0 / 3.0 * math.pi * cutoff**3
            return _invalid(
                f"atom density {density:.3g} atoms/Å^3 is above {MAX_ATOM_DENSITY} "
                f"(~{neighbours:.3g} neighbours per atom within {cutoff:g} Å; "
                "the densest real solids hold ~0.18 atoms/Å^3)"
            )
    if not pbc.any():
        return None
    vectors = cell[pbc]
    gram = vectors @ vectors.T
    det_all = float(np.linalg.det(gram))
    images = 1.0
    for axis in range(len(vectors)):
        others = np.delete(np.delete(gram, axis, 0), axis, 1)
        det_others = float(np.linalg.det(others)) if len(others) else 1.0
        height = math.sqrt(max(det_all, 0.0) / det_others) if det_others > 0 else 0.0
        if height <= 0.0:
            return _invalid("periodic cell is singular (a cell height is zero)")
        images *= 2 * math.ceil(cutoff / height) + 1
    if images > MAX_PERIODIC_IMAGES:
        return _invalid(
            f"cell is too small or too skewed: {images:.3g} periodic images lie within the "
            f"{cutoff:g} Å cutoff (at most {MAX_PERIODIC_IMAGES}); use a larger or "
            "reduced cell (e.g. ase.build.niggli_reduce)"
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


def check_results(
    results: Sequence[StructureResult], batch: StructureBatch, properties: Sequence[Property]
) -> list[StructureResult]:
    """A model call's results, checked: the one place that guards the adapter contract.

    Returns one result per structure: each output reduced to ``properties`` and turned
    into an in-band CALCULATION_FAILED error if a requested property is missing, has the
    wrong shape or is not finite.

    Raises:
        AdapterContractError: the adapter returned a different number of results than
            ``batch`` has structures (the results cannot be matched to structures).
    """
    if not isinstance(results, Sequence) or len(results) != batch.n_structures:
        count = len(results) if isinstance(results, Sequence) else type(results).__name__
        raise AdapterContractError(
            f"the model adapter returned {count} results for {batch.n_structures} structures"
        )
    return [
        _checked(result, properties, int(n))
        for result, n in zip(results, batch.atoms_per_structure, strict=True)
    ]


def _failed(message: str) -> StructureError:
    return StructureError(code=StructureErrorCode.CALCULATION_FAILED, message=message)


def _checked(result: object, properties: Sequence[Property], n_atoms: int) -> StructureResult:
    if isinstance(result, StructureError):
        return result
    if not isinstance(result, StructureOutput):
        return _failed(f"model returned a {type(result).__name__} instead of a result")
    values = {
        Property.ENERGY: result.energy,
        Property.FORCES: result.forces,
        Property.STRESS: result.stress,
    }
    missing = [p.value for p in properties if values[p] is None]
    if missing:
        return _failed(f"model returned no {', '.join(missing)}")
    try:
        energy = float(result.energy) if Property.ENERGY in properties else None  # type: ignore[arg-type]
        forces = (
            np.asarray(result.forces, dtype=np.float64) if Property.FORCES in properties else None
        )
        stress = (
            np.asarray(result.stress, dtype=np.float64) if Property.STRESS in properties else None
        )
    except (TypeError, ValueError) as error:
        return _failed(f"model returned a non-numeric value: {error}")
    problem = check_output(energy, forces, stress, n_atoms)
    if problem is not None:
        return _failed(problem)
    return StructureOutput(energy=energy, forces=forces, stress=stress)
