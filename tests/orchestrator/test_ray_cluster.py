"""`umlip run --ray-address` on a two-node Ray cluster on this machine.

A head (`ray start --head` on 127.0.0.2) and a second node (`ray start --address` on
127.0.0.3, with its own CPU and a custom resource) form one cluster over loopback. The
run spreads its two actors over both nodes, and its tables equal those of a local run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import ase.io
import numpy as np
import pyarrow.parquet as pq
import pytest
from ray_nodes import RAY_TEST_ENV, free_port, start_node, stop_node, wait_for_port

from umlip_orchestrator.examples import emt_crystals
from umlip_wire.process import ServiceProcess

COMPARED = ["material_id", "status", "relax_steps", "relaxed_cell_a", "elastic_tensor_gpa"]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a running two-node cluster (both nodes registered)."""
    logs = tmp_path_factory.mktemp("ray")
    port = free_port()
    head = start_node(logs / "head.log", node_ip="127.0.0.2", head_port=port)
    nodes = [head]
    try:
        wait_for_port("127.0.0.2", port, head, timeout_s=180)
        address = f"127.0.0.2:{port}"
        nodes.append(
            start_node(
                logs / "node2.log",
                node_ip="127.0.0.3",
                address=address,
                resources='{"second_node": 1}',
            )
        )
        count = "import ray; ray.init(address=%r); print(sum(n['Alive'] for n in ray.nodes()))"
        deadline = time.monotonic() + 180
        while True:
            alive = subprocess.run(
                [sys.executable, "-c", count % address],
                capture_output=True,
                text=True,
                env={**os.environ, **RAY_TEST_ENV},
                timeout=120,
            ).stdout.strip()
            if alive == "2":
                break
            assert time.monotonic() < deadline, f"the second node did not join ({alive!r})"
            time.sleep(1)
        yield address
    finally:
        for node in reversed(nodes):
            stop_node(node)


def run(*args: str) -> str:
    process = subprocess.run(
        [sys.executable, "-m", "umlip_orchestrator.cli", "run", "--no-progress", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **RAY_TEST_ENV},
        timeout=900,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    return process.stdout + process.stderr


def test_two_node_cluster_gives_the_local_tables(
    emt_service: ServiceProcess, two_nodes: str, tmp_path: Path
) -> None:
    dataset = tmp_path / "emt.extxyz"
    ase.io.write(dataset, emt_crystals()[:6], format="extxyz")
    common = ["--service", f"emt={emt_service.target}", "--dataset", str(dataset)]
    common += ["--ion-mode", "relaxed", "--actors-per-service", "2", "--group-size", "3"]
    cluster_out, local_out = tmp_path / "cluster", tmp_path / "local"
    output = run(*common, "--out", str(cluster_out), "--ray-address", two_nodes)
    match = re.search(r"emt: 2 Ray actor\(s\) on node\(s\) (.+)", output)
    assert match, output
    assert match.group(1).split(", ") == ["127.0.0.2", "127.0.0.3"], output
    run(*common, "--out", str(local_out))

    cluster = pq.read_table(cluster_out / "results.parquet", columns=COMPARED).to_pydict()
    local = pq.read_table(local_out / "results.parquet", columns=COMPARED).to_pydict()
    assert cluster["material_id"] == local["material_id"]
    assert set(cluster["status"]) == {"ok"}
    assert cluster["relax_steps"] == local["relax_steps"]
    for column in ("relaxed_cell_a", "elastic_tensor_gpa"):
        np.testing.assert_allclose(
            np.array(cluster[column], dtype=float), np.array(local[column], dtype=float), atol=1e-9
        )
    assert pq.read_table(cluster_out / "stresses.parquet").num_rows == 6 * 24
