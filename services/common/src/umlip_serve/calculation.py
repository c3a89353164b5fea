"""One Calculate call from request message to response message.

Decodes and checks the request, validates each structure (failures in-band), runs the
valid ones through the dynamic batcher, checks the model's outputs and encodes the
response in request order.
"""

from __future__ import annotations

import numpy as np

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip_serve.batch import (
    StructureError,
    StructureErrorCode,
    StructureOutput,
    StructureResult,
)
from umlip_serve.batcher import DynamicBatcher
from umlip_serve.codec import decode_batch, decode_properties, encode_result
from umlip_serve.errors import InvalidRequestError, ResourceExhaustedError, is_out_of_memory
from umlip_serve.potential import ModelInfo, Potential
from umlip_serve.settings import Settings
from umlip_serve.validation import check_output, check_structure


class CalculationEngine:
    """Serves Calculate requests for one loaded potential."""

    def __init__(
        self, potential: Potential, info: ModelInfo, settings: Settings, batcher: DynamicBatcher
    ) -> None:
        self._potential = potential
        self._supported = frozenset(info.supported_atomic_numbers)
        self._settings = settings
        self._batcher = batcher

    @property
    def batcher(self) -> DynamicBatcher:
        """The dynamic batcher (its ``stats`` count merged model calls)."""
        return self._batcher

    def handle(self, request: pb.CalculateRequest) -> pb.CalculateResponse:
        """Computes a request's results, one per structure, in request order.

        Raises:
            InvalidRequestError: the request is malformed or over the atom limit.
            ResourceExhaustedError: the model ran out of memory on this batch.
        """
        batch = decode_batch(request.batch)
        limit = self._settings.max_batch_atoms
        if batch.n_atoms > limit:
            raise InvalidRequestError(
                f"batch has {batch.n_atoms} atoms, over this server's limit of {limit} "
                "(UMLIP_MAX_BATCH_ATOMS); split it into smaller calls"
            )
        properties = decode_properties(
            list(request.properties), self._potential.implemented_properties
        )
        results: list[StructureResult | None] = [
            check_structure(batch, i, self._supported, self._potential.name)
            for i in range(batch.n_structures)
        ]
        valid = [i for i, error in enumerate(results) if error is None]
        if valid:
            sub_batch = batch if len(valid) == batch.n_structures else batch.select(valid)
            try:
                outputs = self._batcher.submit(sub_batch, properties)
            except Exception as error:
                if is_out_of_memory(error):
                    raise ResourceExhaustedError(
                        f"the model ran out of memory on {sub_batch.n_atoms} atoms; "
                        "send fewer atoms per call"
                    ) from error
                raise
            if len(outputs) != len(valid):
                raise RuntimeError(
                    f"adapter returned {len(outputs)} results for {len(valid)} structures"
                )
            for index, output in zip(valid, outputs, strict=True):
                results[index] = _checked(output, int(batch.atoms_per_structure[index]))
        return pb.CalculateResponse(results=[encode_result(r) for r in results if r is not None])


def _checked(output: StructureResult, n_atoms: int) -> StructureResult:
    if isinstance(output, StructureError):
        return output
    forces = None if output.forces is None else np.asarray(output.forces, dtype=np.float64)
    stress = None if output.stress is None else np.asarray(output.stress, dtype=np.float64)
    problem = check_output(output.energy, forces, stress, n_atoms)
    if problem is not None:
        return StructureError(code=StructureErrorCode.CALCULATION_FAILED, message=problem)
    return StructureOutput(energy=output.energy, forces=forces, stress=stress)
