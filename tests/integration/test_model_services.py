"""Real model services, each in its own environment, through the orchestrator.

- Isolation: MACE (e3nn 0.4.4) and SevenNet (e3nn >= 0.5) serve side by side in one
  benchmark run, and the run's manifest records both e3nn versions.
- The elastic workflow runs end to end through the CHGNet and SevenNet services on 5
  materials of the bundled Materials Project sample and gives finite tensors.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import service_python
from shared_data import REPO_ROOT

from umlip_orchestrator.package_data import BUNDLED_SAMPLE
from umlip_orchestrator.runner import RunConfig, run_benchmark
from umlip_orchestrator.workflow import WorkflowSettings
from umlip_wire.process import ServiceProcess

SAMPLE = BUNDLED_SAMPLE


@pytest.fixture(scope="module", autouse=True)
def ray_shutdown() -> Iterator[None]:
    """The runs here start Ray inside the test process: stop it after the module."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def chgnet() -> Iterator[ServiceProcess]:
    with ServiceProcess(python=service_python("chgnet"), module="umlip_chgnet") as service:
        yield service


@pytest.fixture(scope="module")
def sevennet() -> Iterator[ServiceProcess]:
    with ServiceProcess(python=service_python("sevennet"), module="umlip_sevennet") as service:
        yield service


@pytest.fixture(scope="module")
def mace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """MACE on a tiny checkpoint built offline by mace-torch's own code."""
    python = service_python("mace")
    checkpoint = tmp_path_factory.mktemp("mace") / "tiny.model"
    subprocess.run(
        [str(python), str(REPO_ROOT / "services/mace/tests/tiny_mace.py"), str(checkpoint)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    env = {"UMLIP_CHECKPOINT": str(checkpoint)}
    with ServiceProcess(python=python, module="umlip_mace", env=env) as service:
        yield service


def test_mace_and_sevennet_run_different_e3nn_in_one_run(
    mace: ServiceProcess, sevennet: ServiceProcess, tmp_path: Path
) -> None:
    config = RunConfig(
        services={"mace": mace.target, "sevennet": sevennet.target},
        dataset=SAMPLE,
        out_dir=tmp_path,
        workflow=WorkflowSettings(ion_mode="clamped"),
        limit=1,
    )
    summary = run_benchmark(config)
    assert not any(m.unavailable for m in summary.models.values())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    services = manifest["runs"][-1]["services"]
    mace_e3nn = services["mace"]["package_versions"]["e3nn"]
    sevennet_e3nn = services["sevennet"]["package_versions"]["e3nn"]
    assert mace_e3nn == "0.4.4"
    assert tuple(int(p) for p in sevennet_e3nn.split(".")[:2]) >= (0, 5)
    rows = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert {row["model"] for row in rows} == {"mace", "sevennet"}


def test_elastic_workflow_through_chgnet_and_sevennet(
    chgnet: ServiceProcess, sevennet: ServiceProcess, tmp_path: Path
) -> None:
    config = RunConfig(
        services={"chgnet": chgnet.target, "sevennet": sevennet.target},
        dataset=SAMPLE,
        out_dir=tmp_path,
        workflow=WorkflowSettings(),
        limit=5,
        group_size=5,
    )
    run_benchmark(config)
    table = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert len(table) == 10
    for row in table:
        assert row["status"] == "ok", (row["model"], row["material_id"], row["error"])
        tensor = np.array(row["elastic_tensor_gpa"])
        assert tensor.shape == (36,) and np.all(np.isfinite(tensor))
        assert np.isfinite(row["k_vrh_gpa"]) and np.isfinite(row["g_vrh_gpa"])
    stresses = pq.read_table(tmp_path / "stresses.parquet")
    assert stresses.num_rows == 10 * 24
