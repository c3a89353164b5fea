"""Bad input to a real EMT server: a clear status or in-band error, and it keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from ase.build import bulk

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve import atoms_to_batch
from umlip_serve.codec import decode_response, encode_batch
from umlip_serve.process import ServiceProcess

MAX_ATOMS = 500
MAX_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def stub(emt_python: Path) -> Iterator[pb_grpc.PotentialServiceStub]:
    env = {"UMLIP_MAX_BATCH_ATOMS": str(MAX_ATOMS), "UMLIP_MAX_MESSAGE_BYTES": str(MAX_BYTES)}
    with (
        ServiceProcess(python=emt_python, module="umlip_emt", env=env) as service,
        grpc.insecure_channel(service.target) as channel,
    ):
        yield pb_grpc.PotentialServiceStub(channel)


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
    ],
    ids=["nan", "inf", "nan-cell", "singular-cell", "close-atoms", "z0", "z119", "unsupported"],
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
