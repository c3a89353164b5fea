"""Fixtures of the MACE service tests: a tiny trained model and a real server process.

Everything runs offline: the model is trained at session start by ``tiny_mace.py`` with
mace-torch's own code and loaded by the server through ``UMLIP_CHECKPOINT=<path>``.
Server processes get a closed loopback proxy, so any download attempt fails locally.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from ase import Atoms
from tiny_mace import DATA, build_tiny_mace, small_frames

from umlip_serve.testing import offline_service
from umlip_wire.process import ServiceProcess

torch.set_num_threads(1)  # in-process models; two threads on two busy cores crawl


@pytest.fixture(scope="session")
def training_frames() -> list[Atoms]:
    """The small MPtrj frames the tiny model is trained on (DFT labels attached)."""
    assert DATA.exists(), f"shared data missing: {DATA}"
    return small_frames()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, training_frames: list[Atoms]) -> Path:
    """A tiny float64 ScaleShiftMACE, briefly trained, saved as ``mace_run_train`` does."""
    return build_tiny_mace(tmp_path_factory.mktemp("mace") / "tiny.model", training_frames)


def start_service(checkpoint: str | Path, **env: str) -> ServiceProcess:
    """A MACE server process of this environment (float64, one torch thread)."""
    return offline_service("umlip_mace", checkpoint, dtype="float64", **env)


@pytest.fixture(scope="session")
def mace_service(tiny_model: Path) -> Iterator[ServiceProcess]:
    """A real MACE server with the tiny model, shared by the session."""
    with start_service(tiny_model) as service:
        yield service
