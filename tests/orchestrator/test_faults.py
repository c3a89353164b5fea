"""Faults during `umlip run` end or heal, never hang (real processes, no mocks).

- The run's own local service is killed (SIGKILL) midway: its fleet restarts it on the
  same port and the run finishes with the table of an uninterrupted run.
- An external service dies and stays down: after the stated unavailability timeout and
  the task retries, its remaining materials are failed rows, the exit status is 3
  (partial), and a rerun once it is back resumes them.
- A Ray worker (the service's actor) is killed midway: the run finishes, complete.
- An output that cannot be written (read-only; a disk that fills up midway) is a clear
  message, not a traceback, and the same command resumes once there is space.
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
from ray_nodes import RAY_TEST_ENV

from umlip_orchestrator.examples import emt_crystals
from umlip_wire.process import ServiceProcess

FLAGS = ["--ion-mode", "relaxed", "--no-progress", "--group-size", "5"]
COMPARED = ["material_id", "status", "relax_steps", "elastic_tensor_gpa"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "emt.extxyz"
    ase.io.write(path, emt_crystals(), format="extxyz")
    return path


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "umlip_orchestrator.cli", "run", *FLAGS, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **RAY_TEST_ENV},
    )


def finish(process: subprocess.Popen[str], timeout_s: float = 600) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return process.returncode, output


def wait_for_rows(out: Path, process: subprocess.Popen[str], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not list((out / "parts" / "results").glob("model=*/part-*.parquet")):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no row was written"
        time.sleep(0.1)


def descendants_matching(root: int, text: str) -> list[int]:
    """Processes under ``root`` (children, grandchildren, ...) whose command line
    contains ``text``; other runs on this machine are never touched."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[pid] = cmdline
    found = []
    for pid, command in commands.items():
        ancestor = parents.get(pid)
        while ancestor and ancestor != root:
            ancestor = parents.get(ancestor)
        if ancestor == root and text in command:
            found.append(pid)
    return found


def compared(out: Path) -> dict[str, list[object]]:
    return pq.read_table(out / "results.parquet", columns=COMPARED).to_pydict()


def assert_same_tables(a: Path, b: Path) -> None:
    left, right = compared(a), compared(b)
    assert left["material_id"] == right["material_id"]
    assert left["status"] == right["status"] and left["relax_steps"] == right["relax_steps"]
    np.testing.assert_allclose(
        np.array(left["elastic_tensor_gpa"], dtype=float),
        np.array(right["elastic_tensor_gpa"], dtype=float),
    )


@pytest.fixture(scope="module")
def uninterrupted(emt_service: ServiceProcess, dataset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    code, output = finish(
        start(
            "--service", f"emt={emt_service.target}", "--dataset", str(dataset), "--out", str(out)
        )
    )
    assert code == 0, output
    return out


def test_killed_local_service_is_restarted(
    dataset: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    process = start("--models", "emt", "--dataset", str(dataset), "--out", str(out))
    wait_for_rows(out, process)
    (service,) = descendants_matching(process.pid, "-m umlip_emt")
    os.kill(service, signal.SIGKILL)
    code, output = finish(process)
    assert code == 0, output
    assert "Traceback" not in output
    assert_same_tables(out, uninterrupted)
    assert "emt died" in output and "restarting" in output


def test_service_that_stays_down_gives_a_partial_run_that_resumes(
    emt_python: Path, dataset: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    service = ServiceProcess(python=emt_python, module="umlip_emt").start()
    port = service.port
    flags = ["--service", f"emt={service.target}", "--dataset", str(dataset), "--out", str(out)]
    process = start(*flags, "--unavailable-timeout", "2")
    wait_for_rows(out, process)
    os.kill(service.pid, signal.SIGKILL)
    service.stop()  # reaps it
    started = time.monotonic()
    code, output = finish(process, timeout_s=300)
    assert code == 3, output
    assert time.monotonic() - started < 200, "the run waited far past the stated timeout"
    assert "partial: emt" in output and "Traceback" not in output
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 20
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all("service call failed" in r["error"] for r in failed)
    assert any(r["status"] == "ok" for r in rows)
    # Back on the same port: the same command computes only what failed.
    revived = ServiceProcess(
        python=emt_python, module="umlip_emt", env={"UMLIP_PORT": str(port)}
    ).start()
    try:
        code, output = finish(start(*flags))
    finally:
        revived.stop()
    assert code == 0, output
    assert_same_tables(out, uninterrupted)


def test_killed_ray_worker_is_replaced(
    emt_service: ServiceProcess, dataset: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    flags = ["--service", f"emt={emt_service.target}", "--dataset", str(dataset)]
    process = start(*flags, "--out", str(out))
    wait_for_rows(out, process)
    workers = descendants_matching(process.pid, "ray::ServiceWorker")
    assert workers, "no actor process found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    code, output = finish(process)
    assert code == 0, output
    assert_same_tables(out, uninterrupted)


def test_unwritable_output_is_a_clear_error(
    emt_service: ServiceProcess, dataset: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    code, output = finish(
        start(
            "--service", f"emt={emt_service.target}", "--dataset", str(dataset),
            "--out", str(blocker / "out"),
        )
    )  # fmt: skip
    assert code == 2, output
    assert "cannot write the results" in output and "Traceback" not in output


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test (skipped where mounting is not permitted)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Writes a file on ``disk`` until no space is left; returns it."""
    filler = disk / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_disk_full_midway_stops_cleanly_and_the_rerun_completes(
    emt_service: ServiceProcess, dataset: Path, uninterrupted: Path, small_disk: Path
) -> None:
    out = small_disk / "run"
    args = ("--service", f"emt={emt_service.target}", "--dataset", str(dataset), "--out", str(out))
    process = start(*args)
    wait_for_rows(out, process)
    filler = fill(small_disk)
    code, output = finish(process)
    assert code == 2, output
    assert "cannot write the results" in output and "No space left" in output, output
    assert "Traceback" not in output
    filler.unlink()  # space again: the same command resumes
    code, output = finish(start(*args))
    assert code == 0, output
    assert_same_tables(out, uninterrupted)
