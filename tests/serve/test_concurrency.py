"""Dynamic batching: concurrent clients get exactly their sequential results, merged."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

from umlip_serve.conformance import remote_calculate
from umlip_wire.process import ServiceProcess


def client_structures(client: int) -> list[Atoms]:
    """A different little batch per client (sizes and lattice constants vary)."""
    rng = np.random.default_rng(client)
    structures = []
    for k in range(1 + client % 3):
        atoms = bulk(["Cu", "Al", "Ni", "Pd"][(client + k) % 4], "fcc", a=3.6 + 0.05 * k)
        atoms = atoms * (1 + k, 1, 1)
        atoms.rattle(0.02, seed=int(rng.integers(1000)))
        structures.append(atoms)
    return structures


def test_sixteen_concurrent_clients_match_sequential_and_merge(emt_python: Path) -> None:
    env = {"UMLIP_LOG_LEVEL": "DEBUG", "UMLIP_BATCH_WAIT_MS": "20"}
    with ServiceProcess(python=emt_python, module="umlip_emt", env=env) as service:
        calculate = remote_calculate(service.target)
        batches = [client_structures(c) for c in range(16)]
        sequential = [calculate(b) for b in batches]
        with ThreadPoolExecutor(max_workers=16) as pool:
            concurrent = list(pool.map(calculate, batches))
    log = service.log_tail(10_000)
    for seq, con in zip(sequential, concurrent, strict=True):
        assert len(seq) == len(con)
        for a, b in zip(seq, con, strict=True):
            assert a.energy == b.energy  # type: ignore[union-attr]
            np.testing.assert_array_equal(a.forces, b.forces)  # type: ignore[union-attr]
            np.testing.assert_array_equal(a.stress, b.stress)  # type: ignore[union-attr]
    merges = [int(n) for n in re.findall(r"merged (\d+) requests", log)]
    assert merges, f"no merged model call in the server log:\n{log[-2000:]}"
    assert max(merges) > 1
    summary = re.search(r"stopped after (\d+) requests, (\d+) model calls \((\d+) merged\)", log)
    assert summary is not None
    requests, model_calls, merged = map(int, summary.groups())
    assert requests == 32 and model_calls < requests and merged >= 1
