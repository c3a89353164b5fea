"""Ray actors: one pool per potential service, each actor holding its own gRPC channel."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import ray

from umlip_orchestrator.client import PotentialClient, ServiceError
from umlip_orchestrator.datasets import Material
from umlip_orchestrator.workflow import MaterialOutcome, WorkflowSettings, stream_elastic_workflow


class ServiceUnavailableError(RuntimeError):
    """The service stayed UNAVAILABLE through the client's retries: retry the task later."""


@ray.remote(num_cpus=0, max_restarts=3)
class ServiceWorker:
    """Runs the elastic workflow for materials through one service, streaming outcomes.

    The gRPC channel is made here, in the actor's own process (channels do not survive
    pickling). Several actors may share one service: each keeps its own requests in
    flight, so a service that one orchestrator process cannot saturate gets more.
    """

    def __init__(
        self,
        target: str,
        model: str,
        settings: WorkflowSettings,
        unavailable_timeout_s: float = 60.0,
    ) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self._client = PotentialClient(target, unavailable_timeout_s=unavailable_timeout_s)
        self._model = model
        self._settings = settings

    def node(self) -> str:
        """The address of the Ray node this actor runs on."""
        return ray.util.get_node_ip_address()

    def run(self, materials: Sequence[Material]) -> Iterator[tuple[int, MaterialOutcome]]:
        """Yields (index in ``materials``, outcome) as each material completes.

        Call with ``.options(num_returns="streaming")``: the driver writes each outcome
        while the others are still computed.

        Raises:
            ServiceUnavailableError: the service was unavailable (the driver retries the
                materials not yet yielded).
            ServiceError: any other whole-call failure (the driver records failed rows).
        """
        try:
            max_atoms = self._client.info().max_batch_atoms or None
            yield from stream_elastic_workflow(
                materials, self._client.calculate, self._model, self._settings, max_atoms=max_atoms
            )
        except ServiceError as error:
            if error.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise ServiceUnavailableError(str(error)) from None
            raise
