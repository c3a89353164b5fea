"""Merged model calls never mix callers: short, failing and NaN-returning adapters.

Real gRPC servers around :class:`ScriptedPotential`; many concurrent callers, each
tagging its structures, some of them triggering a fault in whichever model call their
request lands in.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from scripted_potential import FAIL, NAN, SHORT, scripted_server

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve import Property, Settings, StructureBatch, StructureError, StructureOutput
from umlip_wire.codec import decode_response, encode_batch, encode_properties

CALLERS = 24


def caller_batch(caller: int) -> tuple[StructureBatch, list[float]]:
    """1-3 one-atom structures tagged caller + k/10; fault elements by caller % 4."""
    count = 1 + caller % 3
    tags = [caller + k / 10 for k in range(count)]
    numbers = [29] * count
    kind = caller % 4
    if kind == 1:
        numbers[-1] = SHORT
    elif kind == 2:
        numbers[0] = FAIL
    elif kind == 3:
        numbers[-1] = NAN
    batch = StructureBatch.from_arrays(
        atomic_numbers=[np.array([z]) for z in numbers],
        positions=[np.array([[tag, 1.0, 1.0]]) for tag in tags],
        cells=[np.eye(3) * 40.0] * count,
        pbc=[[True] * 3] * count,
    )
    return batch, tags


def properties_of(caller: int) -> list[Property]:
    return [Property.ENERGY] if caller % 2 else [Property.ENERGY, Property.FORCES]


def call(stub: pb_grpc.PotentialServiceStub, caller: int) -> object:
    batch, _ = caller_batch(caller)
    request = pb.CalculateRequest(
        batch=encode_batch(batch), properties=encode_properties(properties_of(caller))
    )
    try:
        response = stub.Calculate(request, timeout=60)
    except grpc.RpcError as error:
        return error
    return decode_response(response, batch.atoms_per_structure.tolist())


def check_own_answer(caller: int, answer: object) -> None:
    _, tags = caller_batch(caller)
    kind = caller % 4
    if kind == 1:  # short adapter: this request alone fails, with a message
        assert isinstance(answer, grpc.RpcError), (caller, answer)
        assert answer.code() is grpc.StatusCode.INTERNAL
        assert f"returned {len(tags) - 1} results for {len(tags)} structures" in answer.details()
        return
    if kind == 2:  # failing adapter: this request alone fails
        assert isinstance(answer, grpc.RpcError), (caller, answer)
        assert answer.code() is grpc.StatusCode.INTERNAL
        return
    assert isinstance(answer, list), (caller, answer)
    assert len(answer) == len(tags)
    for index, (result, tag) in enumerate(zip(answer, tags, strict=True)):
        if kind == 3 and index == len(tags) - 1:  # NaN: in-band error, never OK
            assert isinstance(result, StructureError)
            assert result.code.value == "CALCULATION_FAILED"
            assert "non-finite energy" in result.message
            continue
        assert isinstance(result, StructureOutput), (caller, result)
        assert result.energy == pytest.approx(tag)  # its own structure, not a neighbour's
        assert (result.forces is None) == (Property.FORCES not in properties_of(caller))
        assert result.stress is None  # never requested: filtered out


@pytest.mark.parametrize("merging", [True, False], ids=["merged", "alone"])
def test_every_caller_gets_its_own_results_or_its_own_error(merging: bool) -> None:
    settings = Settings(port=0, batch_wait_ms=50, dynamic_batching=merging)
    with scripted_server(settings, delay_s=0.02) as (stub, _, batcher, _):
        with ThreadPoolExecutor(max_workers=CALLERS) as pool:
            answers = list(pool.map(lambda c: call(stub, c), range(CALLERS)))
        for caller, answer in enumerate(answers):
            check_own_answer(caller, answer)
        if merging:
            assert batcher.stats.merged_calls >= 1
        else:
            assert batcher.stats.merged_calls == 0


def test_a_nan_energy_is_an_in_band_error() -> None:
    with scripted_server(Settings(port=0)) as (stub, *_):
        answer = call(stub, 3)
    check_own_answer(3, answer)
