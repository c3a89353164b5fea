"""Conversion between the wire messages and flat numpy arrays (both directions).

Used by the server (decode requests, encode responses) and by clients (encode
requests, decode responses). Arrays travel as little-endian bytes: float64 for
positions, cells, forces and stress; uint32 for atomic numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip_wire.batch import (
    ALL_PROPERTIES,
    Property,
    StructureBatch,
    StructureError,
    StructureErrorCode,
    StructureOutput,
    StructureResult,
)
from umlip_wire.errors import InvalidRequestError

_F64 = np.dtype("<f8")
_U32 = np.dtype("<u4")

PROPERTY_TO_WIRE: dict[Property, int] = {
    Property.ENERGY: pb.PROPERTY_ENERGY,
    Property.FORCES: pb.PROPERTY_FORCES,
    Property.STRESS: pb.PROPERTY_STRESS,
}
WIRE_TO_PROPERTY: dict[int, Property] = {v: k for k, v in PROPERTY_TO_WIRE.items()}
_ERROR_TO_WIRE: dict[StructureErrorCode, int] = {
    StructureErrorCode.INVALID_STRUCTURE: pb.STRUCTURE_ERROR_CODE_INVALID_STRUCTURE,
    StructureErrorCode.UNSUPPORTED_ELEMENT: pb.STRUCTURE_ERROR_CODE_UNSUPPORTED_ELEMENT,
    StructureErrorCode.CALCULATION_FAILED: pb.STRUCTURE_ERROR_CODE_CALCULATION_FAILED,
}
_WIRE_TO_ERROR: dict[int, StructureErrorCode] = {v: k for k, v in _ERROR_TO_WIRE.items()}


def encode_batch(batch: StructureBatch) -> pb.StructureBatch:
    """Packs a batch into its wire message."""
    return pb.StructureBatch(
        atoms_per_structure=batch.atoms_per_structure.tolist(),
        atomic_numbers=np.ascontiguousarray(batch.atomic_numbers, dtype=_U32).tobytes(),
        positions=np.ascontiguousarray(batch.positions, dtype=_F64).tobytes(),
        cells=np.ascontiguousarray(batch.cells, dtype=_F64).tobytes(),
        pbc=batch.pbc.reshape(-1).tolist(),
    )


def _array(data: bytes, dtype: np.dtype, name: str, itemsize_hint: str) -> NDArray:
    if len(data) % dtype.itemsize:
        raise InvalidRequestError(
            f"batch.{name} has {len(data)} bytes, not a multiple of {dtype.itemsize} "
            f"({itemsize_hint})"
        )
    return np.frombuffer(data, dtype=dtype)


def decode_batch(message: pb.StructureBatch) -> StructureBatch:
    """Unpacks and checks the shape consistency of a wire batch.

    Raises:
        InvalidRequestError: empty batch or arrays whose lengths do not match the
            per-structure atom counts (the message says which array and by how much).
    """
    counts = np.asarray(message.atoms_per_structure, dtype=np.int64)
    n_structures = len(counts)
    if n_structures == 0:
        raise InvalidRequestError("empty batch: atoms_per_structure lists no structure")
    if np.any(counts < 1):
        bad = int(np.flatnonzero(counts < 1)[0])
        raise InvalidRequestError(f"structure {bad} has no atoms (atoms_per_structure[{bad}]=0)")
    n_atoms = int(counts.sum())
    numbers = _array(message.atomic_numbers, _U32, "atomic_numbers", "uint32 per atom")
    positions = _array(message.positions, _F64, "positions", "float64")
    cells = _array(message.cells, _F64, "cells", "float64")
    if len(numbers) != n_atoms:
        raise InvalidRequestError(
            f"batch.atomic_numbers has {len(numbers)} entries but atoms_per_structure "
            f"sums to {n_atoms}"
        )
    if len(positions) % 3:
        raise InvalidRequestError(
            f"batch.positions has {len(positions)} numbers, not a multiple of 3 (x, y, z)"
        )
    if len(positions) != 3 * n_atoms:
        raise InvalidRequestError(
            f"batch.positions holds {len(positions) // 3} atoms but atoms_per_structure "
            f"sums to {n_atoms}"
        )
    if len(cells) != 9 * n_structures:
        raise InvalidRequestError(
            f"batch.cells has {len(cells)} numbers; expected 9 per structure = {9 * n_structures}"
        )
    if len(message.pbc) != 3 * n_structures:
        raise InvalidRequestError(
            f"batch.pbc has {len(message.pbc)} flags; expected 3 per structure = {3 * n_structures}"
        )
    return StructureBatch(
        atomic_numbers=numbers.astype(np.int64),
        positions=positions.reshape(n_atoms, 3).copy(),
        cells=cells.reshape(n_structures, 3, 3).copy(),
        pbc=np.asarray(message.pbc, dtype=bool).reshape(n_structures, 3),
        atoms_per_structure=counts,
    )


def decode_properties(values: Sequence[int], implemented: Sequence[Property]) -> list[Property]:
    """The requested properties; empty means all implemented ones.

    Raises:
        InvalidRequestError: an unknown or unimplemented property was requested.
    """
    if not values:
        return list(implemented)
    wanted: list[Property] = []
    for value in values:
        prop = WIRE_TO_PROPERTY.get(value)
        if prop is None:
            raise InvalidRequestError(f"unknown property enum value {value}")
        if prop not in implemented:
            raise InvalidRequestError(f"property {prop.value} is not implemented by this model")
        if prop not in wanted:
            wanted.append(prop)
    return wanted


def encode_properties(properties: Sequence[Property] = ALL_PROPERTIES) -> list[int]:
    """Wire enum values of properties."""
    return [PROPERTY_TO_WIRE[p] for p in properties]


def encode_result(result: StructureResult) -> pb.StructureResult:
    """Packs one structure's result (output or in-band error)."""
    if isinstance(result, StructureError):
        return pb.StructureResult(
            error=pb.StructureError(code=_ERROR_TO_WIRE[result.code], message=result.message)
        )
    message = pb.StructureResult()
    if result.energy is not None:
        message.energy = float(result.energy)
    if result.forces is not None:
        message.forces = np.ascontiguousarray(result.forces, dtype=_F64).tobytes()
    if result.stress is not None:
        message.stress = np.ascontiguousarray(result.stress, dtype=_F64).tobytes()
    return message


def decode_result(message: pb.StructureResult, n_atoms: int) -> StructureResult:
    """Unpacks one structure's result; ``n_atoms`` shapes the forces."""
    if message.HasField("error"):
        code = _WIRE_TO_ERROR.get(message.error.code, StructureErrorCode.CALCULATION_FAILED)
        return StructureError(code=code, message=message.error.message)
    return StructureOutput(
        energy=message.energy if message.HasField("energy") else None,
        forces=np.frombuffer(message.forces, dtype=_F64).reshape(n_atoms, 3).copy()
        if message.forces
        else None,
        stress=np.frombuffer(message.stress, dtype=_F64).copy() if message.stress else None,
    )


def decode_response(
    message: pb.CalculateResponse, atoms_per_structure: Sequence[int]
) -> list[StructureResult]:
    """Unpacks a whole response, checking it answers every structure of the request."""
    if len(message.results) != len(atoms_per_structure):
        raise ValueError(
            f"server answered {len(message.results)} results for {len(atoms_per_structure)} "
            "structures"
        )
    return [
        decode_result(result, int(n))
        for result, n in zip(message.results, atoms_per_structure, strict=True)
    ]
