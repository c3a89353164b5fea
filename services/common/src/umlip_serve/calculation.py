"""One Calculate call from request message to response message.

Decodes and checks the request, validates each structure (failures in-band), runs the
valid ones through the dynamic batcher, checks the model's outputs and encodes the
response in request order.
"""

from __future__ import annotations

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip_serve.batcher import DynamicBatcher, IsActive
from umlip_serve.potential import ModelInfo, Potential
from umlip_serve.settings import Settings
from umlip_serve.validation import check_structure
from umlip_wire.batch import Property, StructureResult
from umlip_wire.codec import decode_batch, decode_properties, encode_result
from umlip_wire.errors import (
    CallNotActiveError,
    InvalidRequestError,
    ResourceExhaustedError,
    UmlipError,
    is_out_of_memory,
)


class CalculationEngine:
    """Serves Calculate requests for one loaded potential."""

    def __init__(
        self, potential: Potential, info: ModelInfo, settings: Settings, batcher: DynamicBatcher
    ) -> None:
        self._potential = potential
        self._supported = frozenset(info.supported_atomic_numbers)
        self._cutoff = info.cutoff
        self._settings = settings
        self._batcher = batcher

    @property
    def batcher(self) -> DynamicBatcher:
        """The dynamic batcher (its ``stats`` count merged model calls)."""
        return self._batcher

    def handle(
        self, request: pb.CalculateRequest, is_active: IsActive = lambda: True
    ) -> pb.CalculateResponse:
        """Computes a request's results, one per structure, in request order.

        Args:
            request: the decoded message.
            is_active: False once the caller no longer wants the answer (deadline
                passed, cancelled): the request then stops before the model runs.

        Raises:
            InvalidRequestError: the request is malformed or over the atom limit.
            ResourceExhaustedError: the model ran out of memory on this batch.
            ServerBusyError: too many atoms are queued already.
            CallNotActiveError: the call ended before the model ran.
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
            check_structure(
                batch,
                i,
                self._supported,
                self._potential.name,
                self._cutoff,
                stress=Property.STRESS in properties,
                needs_full_periodicity=self._potential.requires_full_periodicity,
            )
            for i in range(batch.n_structures)
        ]
        valid = [i for i, error in enumerate(results) if error is None]
        if valid:
            if not is_active():
                raise CallNotActiveError("the call was cancelled or its deadline passed")
            sub_batch = batch if len(valid) == batch.n_structures else batch.select(valid)
            try:
                outputs = self._batcher.submit(sub_batch, properties, is_active)
            except UmlipError:
                raise
            except Exception as error:
                if is_out_of_memory(error):
                    raise ResourceExhaustedError(
                        f"the model ran out of memory on {sub_batch.n_atoms} atoms; "
                        "send fewer atoms per call"
                    ) from error
                raise
            for index, output in zip(valid, outputs, strict=True):  # checked by the batcher
                results[index] = output
        return pb.CalculateResponse(results=[encode_result(r) for r in results if r is not None])
