"""End to end: `umlip run` with a real EMT service process and a real local Ray.

Tables are written; a second run resumes with nothing recomputed; a run killed midway
and resumed gives the same table as an uninterrupted run; bad input becomes rows or
messages while the run goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import ase.io
import numpy as np
import pyarrow.parquet as pq
import pytest
from ase.build import bulk
from ray_nodes import RAY_TEST_ENV, free_port, start_node, stop_node, wait_for_port

from umlip_orchestrator.examples import emt_crystals
from umlip_wire.process import ServiceProcess

RUN_FLAGS = ["--ion-mode", "clamped", "--group-size", "2", "--no-progress"]
COMPARED = [
    "material_id",
    "model",
    "status",
    "relax_converged",
    "relax_steps",
    "relaxed_cell_a",
    "elastic_tensor_gpa",
    "k_vrh_gpa",
    "g_vrh_gpa",
    "born_stable",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "emt20.extxyz"
    ase.io.write(path, emt_crystals(), format="extxyz")
    return path


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray head on loopback shared by the runs of this module (`--ray-address`)."""
    port = free_port()
    head = start_node(
        tmp_path_factory.mktemp("ray") / "head.log",
        node_ip="127.0.0.2",
        head_port=port,
        num_cpus=2,
    )
    wait_for_port("127.0.0.2", port, head, timeout_s=180)
    yield f"127.0.0.2:{port}"
    stop_node(head)


def umlip(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "umlip_orchestrator.cli", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **RAY_TEST_ENV},
        **kwargs,  # type: ignore[arg-type]
    )


def run_to_end(*args: str) -> str:
    process = umlip(*args)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    return output


def part_files(out: Path) -> list[Path]:
    return sorted((out / "parts" / "results").glob("model=*/part-*.parquet"))


def compared(out: Path) -> dict[str, list[object]]:
    return pq.read_table(out / "results.parquet", columns=COMPARED).to_pydict()


def test_run_resume_and_kill(
    emt_service: ServiceProcess, dataset: Path, tmp_path: Path, ray_address: str
) -> None:
    service = f"emt={emt_service.target}"
    flags = [*RUN_FLAGS, "--ray-address", ray_address]
    whole = tmp_path / "whole"
    output = run_to_end(
        "--service", service, "--dataset", str(dataset), "--out", str(whole), *flags
    )
    table = pq.read_table(whole / "results.parquet")
    assert table.num_rows == 20, output
    assert set(table.column("status").to_pylist()) == {"ok"}, table.column("error").to_pylist()
    tensors = np.array(table.column("elastic_tensor_gpa").to_pylist())
    assert np.all(np.isfinite(tensors))
    stresses = pq.read_table(whole / "stresses.parquet")
    assert stresses.num_rows == 20 * 24
    assert pq.read_schema(whole / "results.parquet").field("k_vrh_gpa").metadata[b"unit"] == b"GPa"
    assert (whole / "manifest.json").exists()

    # Resume with nothing to do: no new part file, same table.
    before = part_files(whole)
    run_to_end("--service", service, "--dataset", str(dataset), "--out", str(whole), *flags)
    assert part_files(whole) == before

    # Kill midway (SIGKILL, the whole process group), then resume.
    killed = tmp_path / "killed"
    process = umlip("--service", service, "--dataset", str(dataset), "--out", str(killed), *flags)
    deadline = time.monotonic() + 600
    while len(part_files(killed)) < 2:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    written_before_kill = len(pq.read_table(part_files(killed)[0]).column("material_id"))
    assert not (killed / "results.parquet").exists()
    assert written_before_kill >= 1
    run_to_end("--service", service, "--dataset", str(dataset), "--out", str(killed), *flags)
    resumed, uninterrupted = compared(killed), compared(whole)
    assert resumed["material_id"] == uninterrupted["material_id"]
    for column in COMPARED:
        if column in ("relaxed_cell_a", "elastic_tensor_gpa", "k_vrh_gpa", "g_vrh_gpa"):
            np.testing.assert_allclose(
                np.array(resumed[column], dtype=float), np.array(uninterrupted[column], dtype=float)
            )
        else:
            assert resumed[column] == uninterrupted[column], column


def test_bad_input_becomes_rows_and_messages(emt_service: ServiceProcess, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    ase.io.write(folder / "good.extxyz", [bulk("Cu", "fcc", a=3.6), bulk("Ni", "fcc", a=3.52)])
    ase.io.write(folder / "xenon.cif", bulk("Xe", "fcc", a=6.2))
    overlapping = bulk("Cu", "fcc", a=3.6, cubic=True)
    overlapping.positions[1] = overlapping.positions[0] + [0.05, 0, 0]
    ase.io.write(folder / "overlapping.extxyz", overlapping)
    (folder / "notes.txt").write_text("this is not a crystal structure\n")
    out = tmp_path / "out"
    output = run_to_end(
        "--service",
        f"emt={emt_service.target}",
        "--dataset",
        str(folder),
        "--out",
        str(out),
        *RUN_FLAGS,
    )
    rows = pq.read_table(out / "results.parquet").to_pylist()
    by_id = {row["material_id"]: row for row in rows}
    assert by_id["good#0"]["status"] == "ok" and by_id["good#1"]["status"] == "ok"
    assert by_id["xenon"]["status"] == "skipped" and "Xe" in by_id["xenon"]["error"]
    assert by_id["overlapping"]["status"] == "failed" and "apart" in by_id["overlapping"]["error"]
    assert "notes.txt" in output and "could not be read" in output
    assert "Traceback" not in output


def test_clear_errors_on_bad_arguments(tmp_path: Path) -> None:
    for args, message in [
        (["--service", "emt", "--dataset", "x"], "expected NAME=HOST:PORT"),
        (
            ["--service", "emt=127.0.0.1:1", "--dataset", str(tmp_path / "missing")],
            "does not exist",
        ),
        (["--service", "emt=127.0.0.1:1", "--dataset", str(tmp_path), "--fmax", "-1"], "positive"),
    ]:
        process = umlip(*args, "--out", str(tmp_path / "o"))
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 2, output
        assert message in output and "Traceback" not in output


def test_progress_bar_counts_up_to_materials_times_models(
    emt_service: ServiceProcess, dataset: Path, tmp_path: Path, ray_address: str
) -> None:
    flags = ["--ion-mode", "clamped", "--limit", "4", "--ray-address", ray_address]
    args = ["--service", f"emt={emt_service.target}", "--service", f"emt-b={emt_service.target}"]
    output = run_to_end(*args, "--dataset", str(dataset), "--out", str(tmp_path), *flags)
    assert "materials x models: 100%" in output and "8/8" in output
    assert "mat/s" in output
    again = run_to_end(*args, "--dataset", str(dataset), "--out", str(tmp_path), *flags)
    assert "materials x models: 0mat" in again and "8/8" not in again  # resumed: none planned
