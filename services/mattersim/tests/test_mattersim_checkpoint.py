"""UMLIP_CHECKPOINT by name: mattersim's cache is used offline; no cache fails fast.

No test sends traffic anywhere but loopback: servers and in-process downloads get a
proxy on a closed loopback port, so a download attempt fails at once on this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from ase.build import bulk
from conftest import NO_NETWORK, start_service

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_mattersim.checkpoint import DEFAULT_MODEL, resolve_checkpoint
from umlip_serve import CalculatorSetupError, StructureOutput, file_sha256
from umlip_serve.conformance import remote_calculate

#: Seconds within which a missing checkpoint must fail once the server has started.
FAIL_FAST_S = 30.0


def cached_path(home: Path, file_name: str) -> Path:
    """Where mattersim keeps pretrained model ``file_name`` for a user with ``home``."""
    return home / ".local" / "mattersim" / "pretrained_models" / file_name


def offline_env(home: Path) -> dict[str, str]:
    """Environment of a fresh user without network."""
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), **NO_NETWORK}


def test_default_name_loads_from_cache_without_network(tiny_model: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    target = cached_path(home, "mattersim-v1.0.0-1M.pth")
    target.parent.mkdir(parents=True)
    shutil.copy(tiny_model, target)
    with start_service("", **offline_env(home)) as service:  # "" = the default
        with grpc.insecure_channel(service.target) as channel:
            info = pb_grpc.PotentialServiceStub(channel).GetModelInfo(
                pb.GetModelInfoRequest(), timeout=30
            )
        (result,) = remote_calculate(service.target)([bulk("Cu", "fcc", a=3.6)])
    assert info.checkpoint_name == DEFAULT_MODEL
    assert info.checkpoint_sha256 == file_sha256(tiny_model)
    assert info.dtype == pb.DTYPE_FLOAT32
    assert list(info.supported_atomic_numbers) == list(range(1, 95))
    assert isinstance(result, StructureOutput)


def test_5m_name_is_case_insensitive(tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    for key, value in offline_env(home).items():
        monkeypatch.setenv(key, value)
    target = cached_path(home, "mattersim-v1.0.0-5M.pth")
    target.parent.mkdir(parents=True)
    shutil.copy(tiny_model, target)
    assert resolve_checkpoint("mattersim-v1.0.0-5m.pth") == ("mattersim-v1.0.0-5m.pth", target)


def test_missing_cache_offline_fails_fast_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    for key, value in offline_env(home).items():
        monkeypatch.setenv(key, value)
    start = time.monotonic()
    with pytest.raises(CalculatorSetupError, match="could not be downloaded") as error:
        resolve_checkpoint("MatterSim-v1.0.0-5M")
    assert time.monotonic() - start < FAIL_FAST_S
    assert str(cached_path(home, "")) in str(error.value)
    assert not cached_path(home, "mattersim-v1.0.0-5M.pth").exists()


def test_missing_cache_offline_server_exits_with_clear_error(tmp_path: Path) -> None:
    # Run the entrypoint directly: ServiceProcess.start() would keep polling health
    # until its deadline after the process has exited.
    log_path = tmp_path / "service.log"
    env = {
        **os.environ,
        "UMLIP_PORT": "0",
        "UMLIP_CHECKPOINT": "MatterSim-v1.0.0-1M",
        "OMP_NUM_THREADS": "1",
        **offline_env(tmp_path / "home"),
    }
    with log_path.open("wb") as log:
        process = subprocess.run(
            [sys.executable, "-m", "umlip_mattersim"],
            env=env,
            stdout=log,
            stderr=log,
            timeout=300,
        )
    log = log_path.read_text()
    assert process.returncode == 3, log
    assert "MatterSim checkpoint mattersim-v1.0.0-1M.pth is not in the cache" in log
    assert "UMLIP_CHECKPOINT" in log
    started, failed = (_log_time(log, marker) for marker in ("listening on", "could not load"))
    assert (failed - started).total_seconds() < FAIL_FAST_S


def test_unknown_name_is_a_setup_error() -> None:
    with pytest.raises(CalculatorSetupError, match="neither a MatterSim pretrained model"):
        resolve_checkpoint("MatterSim-v9")


def _log_time(log: str, marker: str) -> datetime:
    line = next(line for line in log.splitlines() if marker in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
