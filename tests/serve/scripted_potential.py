"""A test adapter whose misbehaviour is chosen by the structures it is given, and a
real in-process gRPC server around it.

Every structure's energy is the x coordinate of its first atom, so a caller that tags
its structures can tell its own results from another caller's. Elements script faults:

- Al (Z=13) anywhere in a model call: the adapter returns one result too few;
- Ni (Z=28) anywhere in a model call: the adapter raises;
- Ag (Z=47) in a structure: that structure's energy is NaN.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import numpy as np

from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve import (
    ModelInfo,
    Potential,
    Property,
    Settings,
    StructureBatch,
    StructureOutput,
    StructureResult,
)
from umlip_serve.batcher import DynamicBatcher
from umlip_serve.server import create_server, load_into

SHORT, FAIL, NAN = 13, 28, 47


@dataclass
class CallLog:
    """What the adapter was asked to compute."""

    structures: int = 0
    largest_call_atoms: int = 0
    tags: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ScriptedPotential(Potential):
    """See the module docstring; ``delay_s`` slows every model call (to fill queues)."""

    name = "scripted"

    def __init__(self, settings: Settings, delay_s: float = 0.0) -> None:
        super().__init__(settings)
        self.delay_s = delay_s
        self.log = CallLog()

    def load(self) -> ModelInfo:
        return ModelInfo(
            model_version="0",
            checkpoint_name="scripted",
            supported_atomic_numbers=frozenset({29, SHORT, FAIL, NAN}),
            cutoff=5.0,
        )

    def calculate(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        time.sleep(self.delay_s)
        tags = [float(batch.structure(i)[1][0, 0]) for i in range(batch.n_structures)]
        with self.log.lock:
            self.log.structures += batch.n_structures
            self.log.largest_call_atoms = max(self.log.largest_call_atoms, batch.n_atoms)
            self.log.tags.extend(tags)
        if FAIL in batch.atomic_numbers:
            raise RuntimeError("scripted failure")
        results: list[StructureResult] = []
        for index, tag in enumerate(tags):
            numbers = batch.structure(index)[0]
            results.append(
                StructureOutput(
                    energy=float("nan") if NAN in numbers else tag,
                    forces=np.zeros((len(numbers), 3)),
                    stress=np.zeros(6),
                )
            )
        return results[:-1] if SHORT in batch.atomic_numbers else results


@contextmanager
def scripted_server(
    settings: Settings, delay_s: float = 0.0, potential: ScriptedPotential | None = None
) -> Iterator[tuple[pb_grpc.PotentialServiceStub, ScriptedPotential, DynamicBatcher, str]]:
    """A started, loaded server: (stub, adapter, batcher, target); ``potential`` replaces
    the default :class:`ScriptedPotential` (a subclass declaring other capabilities)."""
    potential = potential or ScriptedPotential(settings, delay_s)
    server, port, servicer, health_servicer = create_server(potential, settings)
    server.start()
    batcher = load_into(potential, settings, servicer, health_servicer)
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            yield pb_grpc.PotentialServiceStub(channel), potential, batcher, target
    finally:
        server.stop(0)
        batcher.close()
