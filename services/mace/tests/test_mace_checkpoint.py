"""UMLIP_CHECKPOINT by name: the library's cache is used offline; no cache fails fast.

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
from mace.calculators import foundations_models

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_mace.checkpoint import DEFAULT_MODEL, resolve_checkpoint
from umlip_serve import CalculatorSetupError, StructureOutput, file_sha256
from umlip_serve.conformance import remote_calculate

#: Seconds within which a missing checkpoint must fail once the server has started.
FAIL_FAST_S = 30.0


def cached_path(cache_home: Path, name: str) -> Path:
    """Where mace-torch caches foundation model ``name`` (its own naming rule)."""
    url_name = os.path.basename(foundations_models.mace_mp_urls[name])
    return cache_home / "mace" / "".join(c for c in url_name if c.isalnum() or c in "_")


def isolated_home(root: Path) -> dict[str, str]:
    """Environment of a fresh user: empty home and cache directories, no network."""
    (root / "home").mkdir(exist_ok=True)
    return {"HOME": str(root / "home"), "XDG_CACHE_HOME": str(root / "cache"), **NO_NETWORK}


def test_default_name_loads_from_cache_without_network(tiny_model: Path, tmp_path: Path) -> None:
    env = isolated_home(tmp_path)
    target = cached_path(tmp_path / "cache", DEFAULT_MODEL)
    target.parent.mkdir(parents=True)
    shutil.copy(tiny_model, target)
    with start_service("", **env) as service:  # "" = the default foundation model
        with grpc.insecure_channel(service.target) as channel:
            info = pb_grpc.PotentialServiceStub(channel).GetModelInfo(
                pb.GetModelInfoRequest(), timeout=30
            )
        (result,) = remote_calculate(service.target)([bulk("Cu", "fcc", a=3.6)])
    assert info.checkpoint_name == DEFAULT_MODEL
    assert info.checkpoint_sha256 == file_sha256(tiny_model)
    assert info.package_versions["e3nn"] == "0.4.4"
    assert isinstance(result, StructureOutput)


def test_missing_cache_offline_fails_fast_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in isolated_home(tmp_path).items():
        monkeypatch.setenv(key, value)
    start = time.monotonic()
    with pytest.raises(CalculatorSetupError, match="could not be downloaded") as error:
        resolve_checkpoint("medium")
    assert time.monotonic() - start < FAIL_FAST_S
    assert str(tmp_path / "cache" / "mace") in str(error.value)
    assert not list((tmp_path / "cache" / "mace").glob("*")), "no partial file left behind"


def test_missing_cache_offline_server_exits_with_clear_error(tmp_path: Path) -> None:
    # Run the entrypoint directly: ServiceProcess.start() would keep polling health
    # until its deadline after the process has exited.
    log_path = tmp_path / "service.log"
    env = {
        **os.environ,
        "UMLIP_PORT": "0",
        "UMLIP_CHECKPOINT": "medium",
        "OMP_NUM_THREADS": "1",
        **isolated_home(tmp_path),
    }
    with log_path.open("wb") as log:
        process = subprocess.run(
            [sys.executable, "-m", "umlip_mace"], env=env, stdout=log, stderr=log, timeout=300
        )
    log = log_path.read_text()
    assert process.returncode == 3, log
    assert "MACE foundation model 'medium' is not in the cache" in log
    assert "UMLIP_CHECKPOINT" in log
    started, failed = (_log_time(log, marker) for marker in ("listening on", "could not load"))
    assert (failed - started).total_seconds() < FAIL_FAST_S


def test_unknown_name_is_a_setup_error() -> None:
    with pytest.raises(CalculatorSetupError, match="neither a MACE-MP foundation model"):
        resolve_checkpoint("no-such-model")


def _log_time(log: str, marker: str) -> datetime:
    line = next(line for line in log.splitlines() if marker in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
