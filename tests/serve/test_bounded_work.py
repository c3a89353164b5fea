"""Bounded work: expired calls never reach the model, and a full queue sheds load."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from scripted_potential import scripted_server

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip_serve import CalculatorSetupError, Settings, StructureBatch
from umlip_serve.codec import encode_batch


def tagged(*tags: float) -> pb.CalculateRequest:
    """One one-atom Cu structure per tag (its energy is the tag)."""
    batch = StructureBatch.from_arrays(
        atomic_numbers=[np.array([29])] * len(tags),
        positions=[np.array([[tag, 1.0, 1.0]]) for tag in tags],
        cells=[np.eye(3) * 40.0] * len(tags),
        pbc=[[True] * 3] * len(tags),
    )
    return pb.CalculateRequest(batch=encode_batch(batch))


def test_calls_whose_deadline_passed_while_queued_never_reach_the_model() -> None:
    with scripted_server(Settings(port=0), delay_s=0.6) as (stub, potential, batcher, _):
        busy = threading.Thread(target=lambda: stub.Calculate(tagged(1.0), timeout=30))
        busy.start()
        time.sleep(0.2)  # the model is now busy with the first call
        for tag in (21.0, 22.0, 23.0):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Calculate(tagged(tag), timeout=0.1)
            assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        busy.join()
        assert len(stub.Calculate(tagged(2.0), timeout=30).results) == 1
    assert potential.log.tags == [1.0, 2.0]
    assert batcher.stats.dropped == 3


def test_a_full_queue_sheds_load_with_resource_exhausted() -> None:
    settings = Settings(port=0, max_batch_atoms=10, max_queued_atoms=10)
    with scripted_server(settings, delay_s=0.6) as (stub, _, batcher, _):
        first = tagged(*range(8))
        busy = threading.Thread(target=lambda: stub.Calculate(first, timeout=30))
        busy.start()
        time.sleep(0.2)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Calculate(tagged(30, 31, 32), timeout=30)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server busy: 8 atoms already queued" in caught.value.details()
        assert "UMLIP_MAX_QUEUED_ATOMS" in caught.value.details()
        assert len(stub.Calculate(tagged(1.0, 2.0), timeout=30).results) == 2  # fits
        busy.join()
        assert len(stub.Calculate(tagged(30, 31, 32), timeout=30).results) == 3
    assert batcher.stats.shed == 1


def test_queue_bound_defaults_to_four_batches_and_is_validated() -> None:
    assert Settings(max_batch_atoms=100).max_queued_atoms == 400
    assert Settings.from_env({"UMLIP_MAX_QUEUED_ATOMS": "7"}).max_queued_atoms == 7
    with pytest.raises(CalculatorSetupError):
        Settings(max_queued_atoms=-1)
