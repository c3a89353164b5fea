"""UMLIP_CHECKPOINT by name: mattersim's cache is used offline; no cache fails fast.

No test sends traffic anywhere but loopback: servers and in-process downloads get a
proxy on a closed loopback port, so a download attempt fails at once on this machine.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from ase.build import bulk
from conftest import start_service

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip_mattersim.checkpoint import DEFAULT_MODEL, resolve_checkpoint
from umlip_serve import CalculatorSetupError, StructureOutput, file_sha256
from umlip_serve.conformance import remote_calculate
from umlip_serve.testing import NO_NETWORK, log_seconds, model_info, run_entrypoint

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
        info = model_info(service.target)
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
    returncode, log = run_entrypoint(
        "umlip_mattersim",
        {"UMLIP_CHECKPOINT": "MatterSim-v1.0.0-1M", **offline_env(tmp_path / "home")},
        tmp_path / "service.log",
    )
    assert returncode == 3, log
    assert "MatterSim checkpoint mattersim-v1.0.0-1M.pth is not in the cache" in log
    assert "UMLIP_CHECKPOINT" in log
    assert log_seconds(log, "listening on", "could not load") < FAIL_FAST_S


def test_unknown_name_is_a_setup_error() -> None:
    with pytest.raises(CalculatorSetupError, match="neither a MatterSim pretrained model"):
        resolve_checkpoint("MatterSim-v9")
