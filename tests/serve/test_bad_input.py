"""Bad input to a real EMT server: a clear status or in-band error, and it keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve import atoms_to_batch
from umlip_wire.codec import decode_response, encode_batch
from umlip_wire.process import ServiceProcess

MAX_ATOMS = 500
MAX_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def channel(emt_python: Path) -> Iterator[grpc.Channel]:
    env = {"UMLIP_MAX_BATCH_ATOMS": str(MAX_ATOMS), "UMLIP_MAX_MESSAGE_BYTES": str(MAX_BYTES)}
    with (
        ServiceProcess(python=emt_python, module="umlip_emt", env=env) as service,
        grpc.insecure_channel(service.target) as channel,
    ):
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.PotentialServiceStub:
    return pb_grpc.PotentialServiceStub(channel)


def good_batch() -> pb.StructureBatch:
    return encode_batch(atoms_to_batch([bulk("Cu", "fcc", a=3.6), bulk("Al", "fcc", a=4.05)]))


def call(stub: pb_grpc.PotentialServiceStub, batch: pb.StructureBatch) -> pb.CalculateResponse:
    return stub.Calculate(pb.CalculateRequest(batch=batch), timeout=30)


def assert_status(
    stub: pb_grpc.PotentialServiceStub, batch: pb.StructureBatch, code: grpc.StatusCode, text: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(stub, batch)
    assert caught.value.code() is code
    assert text in caught.value.details()
    assert "Traceback" not in caught.value.details()
    # The server keeps serving after every bad request.
    assert len(call(stub, good_batch()).results) == 2


def test_empty_batch(stub: pb_grpc.PotentialServiceStub) -> None:
    assert_status(stub, pb.StructureBatch(), grpc.StatusCode.INVALID_ARGUMENT, "empty batch")


def test_positions_not_multiple_of_three(stub: pb_grpc.PotentialServiceStub) -> None:
    batch = good_batch()
    batch.positions = batch.positions[:-8]
    assert_status(stub, batch, grpc.StatusCode.INVALID_ARGUMENT, "not a multiple of 3")


def test_positions_not_matching_counts(stub: pb_grpc.PotentialServiceStub) -> None:
    batch = good_batch()
    batch.atoms_per_structure[1] = 3
    assert_status(stub, batch, grpc.StatusCode.INVALID_ARGUMENT, "atoms_per_structure sums to 4")


def test_ragged_bytes(stub: pb_grpc.PotentialServiceStub) -> None:
    batch = good_batch()
    batch.positions = batch.positions[:-3]
    assert_status(stub, batch, grpc.StatusCode.INVALID_ARGUMENT, "not a multiple of 8")


def test_batch_over_atom_limit(stub: pb_grpc.PotentialServiceStub) -> None:
    big = encode_batch(atoms_to_batch([bulk("Cu", "fcc", a=3.6, cubic=True) * (6, 6, 6)]))
    assert_status(stub, big, grpc.StatusCode.INVALID_ARGUMENT, f"limit of {MAX_ATOMS}")


def test_message_over_size_limit(stub: pb_grpc.PotentialServiceStub) -> None:
    batch = good_batch()
    batch.cells = batch.cells + b"\0" * MAX_BYTES
    assert_status(stub, batch, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max")


@pytest.mark.parametrize(
    ("mutate", "code", "text"),
    [
        (lambda a: a.positions.__setitem__((0, 0), np.nan), "INVALID_STRUCTURE", "NaN"),
        (lambda a: a.positions.__setitem__((0, 1), np.inf), "INVALID_STRUCTURE", "infinite"),
        (lambda a: a.cell.array.__setitem__((0, 0), np.nan), "INVALID_STRUCTURE", "cell contains"),
        (lambda a: a.set_cell(np.diag([3.0, 3.0, 0.0])), "INVALID_STRUCTURE", "singular"),
        (lambda a: a.positions.__setitem__(1, a.positions[0] + 0.05), "INVALID_STRUCTURE", "apart"),
        (lambda a: a.numbers.__setitem__(0, 0), "INVALID_STRUCTURE", "outside 1..118"),
        (lambda a: a.numbers.__setitem__(0, 119), "INVALID_STRUCTURE", "outside 1..118"),
        (lambda a: a.numbers.__setitem__(0, 54), "UNSUPPORTED_ELEMENT", "Xe (Z=54)"),
        (lambda a: a.positions.__setitem__((2, 0), 1e17), "INVALID_STRUCTURE", "positions exceed"),
        (lambda a: a.set_cell(a.cell * 1e100), "INVALID_STRUCTURE", "cell entries exceed"),
        (lambda a: a.set_cell(a.cell * 0.1, scale_atoms=True), "INVALID_STRUCTURE", "density"),
    ],
    ids=[
        "nan",
        "inf",
        "nan-cell",
        "singular-cell",
        "close-atoms",
        "z0",
        "z119",
        "unsupported",
        "huge-position",
        "huge-cell",
        "too-dense",
    ],
)
def test_bad_structure_fails_in_band(
    stub: pb_grpc.PotentialServiceStub, mutate: object, code: str, text: str
) -> None:
    bad = bulk("Cu", "fcc", a=3.6, cubic=True)
    mutate(bad)  # type: ignore[operator]
    structures = [bulk("Cu", "fcc", a=3.6), bad, bulk("Ni", "fcc", a=3.52)]
    batch = atoms_to_batch(structures)
    response = call(stub, encode_batch(batch))
    ok_first, failed, ok_last = decode_response(response, batch.atoms_per_structure.tolist())
    assert failed.code.value == code  # type: ignore[union-attr]
    assert text in failed.message  # type: ignore[union-attr]
    assert np.isfinite(ok_first.energy) and np.isfinite(ok_last.energy)  # type: ignore[union-attr]


def test_atoms_close_across_periodic_boundary(stub: pb_grpc.PotentialServiceStub) -> None:
    bad = bulk("Cu", "fcc", a=3.6, cubic=True)
    bad.positions[1] = bad.positions[0] + bad.cell[0] - [0.04, 0, 0]
    batch = atoms_to_batch([bad])
    (failed,) = decode_response(call(stub, encode_batch(batch)), [4])
    assert failed.code.value == "INVALID_STRUCTURE" and "apart" in failed.message  # type: ignore[union-attr]


def test_unknown_property(stub: pb_grpc.PotentialServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Calculate(pb.CalculateRequest(batch=good_batch(), properties=[7]), timeout=30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


RAW_CALCULATE = "/umlip.potential.v1.PotentialService/Calculate"
RAW_MODEL_INFO = "/umlip.potential.v1.PotentialService/GetModelInfo"


def raw_call(channel: grpc.Channel, method: str, data: bytes) -> grpc.RpcError:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as caught:
        call(data, timeout=30)
    return caught.value


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff",
        b"\x0a\x80\x80\x80\x80\x10",  # a field claiming far more bytes than follow
        pb.CalculateRequest(batch=good_batch()).SerializeToString()[:-5],  # truncated
        b"\x08\xff",  # a truncated varint
    ],
    ids=["garbage", "huge-length", "truncated", "bad-varint"],
)
def test_undecodable_bytes_are_invalid_argument(
    channel: grpc.Channel, stub: pb_grpc.PotentialServiceStub, data: bytes
) -> None:
    for method in (RAW_CALCULATE, RAW_MODEL_INFO):
        error = raw_call(channel, method, data)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, error.details())
        assert "not a valid umlip.potential.v1." in error.details()
    assert len(call(stub, good_batch()).results) == 2


def test_raw_bytes_of_a_valid_request_are_answered(channel: grpc.Channel) -> None:
    request = pb.CalculateRequest(batch=good_batch()).SerializeToString()
    calculate = channel.unary_unary(
        RAW_CALCULATE, request_serializer=None, response_deserializer=None
    )
    assert len(pb.CalculateResponse.FromString(calculate(request, timeout=30)).results) == 2


@pytest.mark.parametrize(
    "cell",
    [
        np.eye(3) * 0.2,  # one Cu atom in a 0.2 Å cell
        [[3.6, 0, 0], [3.6e4, 3.6, 0], [0, 0, 3.6]],  # a simple cubic lattice, badly skewed
    ],
    ids=["tiny-cell", "skewed-cell"],
)
def test_cells_that_would_explode_the_neighbour_count_fail_fast_in_band(
    stub: pb_grpc.PotentialServiceStub, cell: object
) -> None:
    atoms = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], cell=cell, pbc=True)
    batch = atoms_to_batch([atoms, bulk("Cu", "fcc", a=3.6)])
    started = time.monotonic()
    failed, ok = decode_response(call(stub, encode_batch(batch)), [1, 1])
    assert time.monotonic() - started < 2.0
    assert failed.code.value == "INVALID_STRUCTURE"  # type: ignore[union-attr]
    assert "density" in failed.message or "periodic images" in failed.message  # type: ignore[union-attr]
    assert np.isfinite(ok.energy)  # type: ignore[union-attr]
