"""UMLIP_CHECKPOINT by name: the library's cache is used offline; no cache fails fast.

No test sends traffic anywhere but loopback: servers and in-process downloads get a
proxy on a closed loopback port, so a download attempt fails at once on this machine.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from ase.build import bulk
from conftest import start_service
from mace.calculators import foundations_models

from umlip_mace.checkpoint import DEFAULT_MODEL, resolve_checkpoint
from umlip_serve import CalculatorSetupError, StructureOutput, file_sha256
from umlip_serve.conformance import remote_calculate
from umlip_serve.testing import NO_NETWORK, log_seconds, model_info, run_entrypoint

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
        info = model_info(service.target)
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
    returncode, log = run_entrypoint(
        "umlip_mace",
        {"UMLIP_CHECKPOINT": "medium", **isolated_home(tmp_path)},
        tmp_path / "service.log",
    )
    assert returncode == 3, log
    assert "MACE foundation model 'medium' is not in the cache" in log
    assert "UMLIP_CHECKPOINT" in log
    assert log_seconds(log, "listening on", "could not load") < FAIL_FAST_S


def test_unknown_name_is_a_setup_error() -> None:
    with pytest.raises(CalculatorSetupError, match="neither a MACE-MP foundation model"):
        resolve_checkpoint("no-such-model")
