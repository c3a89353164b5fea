"""The local launcher: `umlip services up|status|down`, restarts, environment reuse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from ase.build import bulk

from umlip_orchestrator.client import PotentialClient
from umlip_orchestrator.evaluation import Evaluation
from umlip_orchestrator.launcher import (
    LauncherError,
    LocalFleet,
    ensure_environment,
    read_service_list,
)


def umlip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "umlip_orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def read(path: Path) -> dict[str, str]:
    return json.loads(path.read_text())["services"]


def test_up_status_restart_down(emt_python: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = umlip("services", "up", "--models", "emt", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr + up.stdout
    try:
        assert "SERVING" in up.stdout and "emt" in up.stdout
        target = read(state / "endpoints.json")["emt"]
        first_pid = int(read(state / "pids.json")["emt"])
        os.kill(first_pid, signal.SIGKILL)  # the service dies...
        deadline = time.monotonic() + 120
        while int(read(state / "pids.json")["emt"]) == first_pid:
            assert time.monotonic() < deadline, "the supervisor did not restart the service"
            time.sleep(0.5)
        # ...and comes back on the same address: the client's retries bridge the gap.
        assert read(state / "endpoints.json")["emt"] == target
        with PotentialClient(target) as client:
            (result,) = client.calculate([bulk("Cu", "fcc", a=3.6)])
        assert isinstance(result, Evaluation)
        status = umlip("services", "status", "--state-dir", str(state))
        assert status.returncode == 0 and "SERVING" in status.stdout
        # `umlip run --models` with services up: a model that is not up is refused.
        dataset = tmp_path / "cu.extxyz"
        bulk("Cu", "fcc", a=3.6).write(dataset)
        run = umlip(
            "run", "--models", "chgnet", "--dataset", str(dataset),
            "--out", str(tmp_path / "out"), "--state-dir", str(state), "--no-progress",
        )  # fmt: skip
        assert run.returncode == 2, run.stdout + run.stderr
        assert "--models chgnet not among the services that are up (emt)" in run.stderr
        assert not (tmp_path / "out").exists()
    finally:
        down = umlip("services", "down", "--state-dir", str(state))
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not (state / "endpoints.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(int(read(state / "pids.json")["emt"]), 0)
    assert umlip("services", "status", "--state-dir", str(state)).returncode == 1


def test_second_launch_reuses_the_environment(
    emt_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = read_service_list()["emt"]
    assert ensure_environment(service) == service.python  # records the lock's hash
    monkeypatch.setenv("PATH", "/nonexistent")  # no uv: a reinstall would fail
    assert ensure_environment(service) == service.python


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    result = umlip("services", "up", "--models", "nosuchmodel", "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert "unknown model" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(LauncherError):
        ensure_environment(
            read_service_list()["emt"].__class__(name="x", project=tmp_path, module="x")
        )


def test_a_service_that_cannot_start_is_skipped_with_its_reason(
    chgnet_python: Path, emt_python: Path, tmp_path: Path
) -> None:
    """The reason is the service's own error line, without its log's time and level."""
    services = read_service_list()
    broken = [
        replace(services["chgnet"], env={"UMLIP_CHECKPOINT": str(tmp_path / "missing.pth.tar")}),
        replace(services["emt"], env={"UMLIP_DTYPE": "float32"}),
    ]
    with LocalFleet(broken, tmp_path / "logs", restart=False) as fleet:
        reasons = dict(fleet.unavailable)
    assert fleet.endpoints == {}
    assert reasons["chgnet"].startswith("could not load chgnet: unknown CHGNet checkpoint"), reasons
    assert reasons["emt"] == (
        "umlip: cannot serve emt: emt runs in float64 only, not UMLIP_DTYPE=float32; unset it "
        "(default float64) or set one of those"
    )
    assert (tmp_path / "logs" / "chgnet.log").read_text().count("ERROR") >= 1  # kept in full
