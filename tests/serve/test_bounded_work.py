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
from umlip_wire.codec import encode_batch


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


def test_atoms_far_outside_a_periodic_cell_are_refused_in_band() -> None:
    """Unwrapped positions are fine within MAX_CELLS_AWAY cells; an atom ~1.5e5 cells out
    (which hung a CHGNet server in the fuzz test) is an in-band error, found at once."""
    from ase.build import bulk

    from umlip_serve.validation import MAX_CELLS_AWAY, check_structure
    from umlip_wire.ase_bridge import atoms_to_batch
    from umlip_wire.batch import StructureErrorCode

    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)
    near, far = crystal.copy(), crystal.copy()
    near.positions[1] += 50 * crystal.cell[0]  # 50 cells out: the same crystal
    far.positions[1, 0] = 9.9e5
    batch = atoms_to_batch([crystal, near, far])
    started = time.perf_counter()
    checks = [check_structure(batch, i, {29}, "test", 6.0) for i in range(3)]
    assert time.perf_counter() - started < 1.0
    assert checks[0] is None and checks[1] is None and MAX_CELLS_AWAY >= 50
    assert checks[2] is not None and checks[2].code is StructureErrorCode.INVALID_STRUCTURE
    assert "cells outside the periodic cell" in checks[2].message


def test_density_bound_admits_compressed_solids_and_refuses_absurd_ones() -> None:
    from ase.build import bulk

    from umlip_serve.validation import MAX_ATOM_DENSITY, check_structure
    from umlip_wire.ase_bridge import atoms_to_batch

    diamond = bulk("C", "diamond", a=3.567, cubic=True)  # 0.176 atoms/Å^3, densest solid
    squeezed = diamond.copy()
    squeezed.set_cell(diamond.cell[:] * 0.75, scale_atoms=True)  # 0.42 atoms/Å^3
    absurd = diamond.copy()
    absurd.set_cell(diamond.cell[:] * 0.6, scale_atoms=True)  # 0.81 atoms/Å^3
    batch = atoms_to_batch([diamond, squeezed, absurd])
    checks = [check_structure(batch, i, {6}, "test", 6.0) for i in range(3)]
    assert checks[0] is None and checks[1] is None
    assert checks[2] is not None and f"above {MAX_ATOM_DENSITY}" in checks[2].message
