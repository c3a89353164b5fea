"""The orchestrator installs alone: wheels of proto, wire and the orchestrator in a fresh
environment (no server harness) run a benchmark against a real EMT service.

Third-party packages come from PyPI (or uv's cache) at the versions of the workspace
lock (passed as constraints, so the environment is the tested one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import pyarrow.parquet as pq
import pytest
from ray_nodes import RAY_TEST_ENV
from shared_data import REPO_ROOT

from umlip_orchestrator.examples import emt_crystals
from umlip_wire.process import ServiceProcess

PROJECTS = ("proto", "wire", "orchestrator")


def clean_env() -> dict[str, str]:
    """This process's environment without the workspace's virtual environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, **RAY_TEST_ENV}


def uv(*args: str, cwd: Path | None = None, timeout_s: float = 300) -> str:
    result = subprocess.run(
        ["uv", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=clean_env(),
        timeout=timeout_s,
    )
    assert result.returncode == 0, f"uv {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def orchestrator_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("uv") is None:
        pytest.fail("uv is not installed: run scripts/test.sh (it installs uv)")
    root = tmp_path_factory.mktemp("wheels")
    wheels = root / "dist"
    for project in PROJECTS:
        uv("build", "--wheel", "--quiet", "--out-dir", str(wheels), str(REPO_ROOT / project))
    built = sorted(wheels.glob("*.whl"))
    assert [w.name.split("-")[0] for w in built] == [
        "umlip_orchestrator",
        "umlip_proto",
        "umlip_wire",
    ]
    constraints = root / "constraints.txt"
    constraints.write_text(
        uv(
            "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
            "--no-emit-local", "--package", "umlip-orchestrator", "--quiet",
            cwd=REPO_ROOT,
        )
    )  # fmt: skip
    venv = root / "venv"
    uv("venv", "--quiet", "--python", sys.executable, str(venv))
    python = venv / "bin" / "python"
    uv(
        "pip", "install", "--quiet", "--python", str(python),
        "--constraint", str(constraints), *map(str, built),
        timeout_s=600,
    )  # fmt: skip
    return python


def test_wheels_install_without_the_harness(orchestrator_python: Path, tmp_path: Path) -> None:
    def imports(module: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(orchestrator_python), "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            env=clean_env(),
            timeout=120,
        )

    refused = imports("umlip_serve")
    assert refused.returncode != 0 and "No module named 'umlip_serve'" in refused.stderr
    loaded = imports("umlip_orchestrator.cli, umlip_orchestrator.client, umlip_wire, umlip")
    assert loaded.returncode == 0, loaded.stderr


def test_installed_orchestrator_runs_against_a_service(
    orchestrator_python: Path, emt_python: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "emt.extxyz"
    ase.io.write(dataset, emt_crystals()[:2], format="extxyz")
    out = tmp_path / "out"
    with ServiceProcess(python=emt_python, module="umlip_emt") as service:
        result = subprocess.run(
            [
                str(orchestrator_python.parent / "umlip"), "run",
                "--service", f"emt={service.target}", "--dataset", str(dataset),
                "--out", str(out), "--limit", "2", "--no-progress",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            env=clean_env(),
            timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = pq.read_table(out / "results.parquet")
    assert table.num_rows == 2
    assert table.column("status").to_pylist() == ["ok", "ok"], table.column("error").to_pylist()


def test_installed_orchestrator_runs_its_bundled_sample_with_local_services(
    orchestrator_python: Path, emt_python: Path, tmp_path: Path
) -> None:
    """Packaged data, service folders from UMLIP_SERVICES_DIR: no repository lookup."""

    def umlip_run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(orchestrator_python.parent / "umlip"), "run", "--models", "emt",
                "--out", str(tmp_path / "out"), "--limit", "3", "--no-progress",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )  # fmt: skip

    lost = umlip_run(clean_env())
    assert lost.returncode == 2, lost.stdout + lost.stderr
    assert "UMLIP_SERVICES_DIR" in lost.stderr and "Traceback" not in lost.stderr

    result = umlip_run({**clean_env(), "UMLIP_SERVICES_DIR": str(REPO_ROOT / "services")})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    table = pq.read_table(tmp_path / "out" / "results.parquet")
    # The first three entries of the bundled sample: EMT has parameters for AlN only.
    formulas, statuses = table.column("formula").to_pylist(), table.column("status").to_pylist()
    rows = dict(zip(formulas, statuses, strict=True))
    assert rows == {"CeS": "skipped", "SrHg2": "skipped", "AlN": "ok"}, rows
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    dataset = Path(manifest["runs"][-1]["dataset"])  # the copy inside the installed wheel
    assert dataset.is_relative_to(orchestrator_python.parent.parent), dataset
