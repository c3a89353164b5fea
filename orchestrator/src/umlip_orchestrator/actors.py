"""Ray actors: one pool per potential service, each actor holding its own gRPC channel."""

from __future__ import annotations

import os
from collections.abc import Sequence

import ray

from umlip_orchestrator.client import PotentialClient, ServiceError
from umlip_orchestrator.datasets import Material
from umlip_orchestrator.workflow import MaterialOutcome, WorkflowSettings, run_elastic_workflow


class ServiceUnavailableError(RuntimeError):
    """The service stayed UNAVAILABLE through the client's retries: retry the task later."""


@ray.remote(num_cpus=0, max_restarts=3)
class ServiceWorker:
    """Runs the elastic workflow for groups of materials through one service.

    The gRPC channel is made here, in the actor's own process (channels do not survive
    pickling). Relaxation threads run inside the actor; the gRPC calls they need are
    made from the actor's task thread.
    """

    def __init__(self, target: str, model: str, settings: WorkflowSettings) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        self._client = PotentialClient(target)
        self._model = model
        self._settings = settings

    def run(self, materials: Sequence[Material]) -> list[MaterialOutcome]:
        """The workflow's outcomes for ``materials``, in order.

        Raises:
            ServiceUnavailableError: the service was unavailable (the driver retries).
            ServiceError: any other whole-call failure (the driver records failed rows).
        """
        try:
            return run_elastic_workflow(
                materials, self._client.calculate, self._model, self._settings
            )
        except ServiceError as error:
            if error.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise ServiceUnavailableError(str(error)) from None
            raise
