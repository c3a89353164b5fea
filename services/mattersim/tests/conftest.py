"""Fixtures of the MatterSim service tests: a tiny trained model and a real server.

Everything runs offline: the model is trained at session start by ``tiny_mattersim.py``
with mattersim's own code and loaded by the server through ``UMLIP_CHECKPOINT=<path>``.
The test process and its servers get a scratch ``HOME`` (mattersim creates
``~/.local/mattersim`` on each load); servers also get a closed loopback proxy, so any
download attempt fails locally.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from ase import Atoms
from tiny_mattersim import DATA, build_tiny_mattersim, small_frames

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
    """A tiny M3Gnet, briefly trained, written by ``Potential.save``."""
    return build_tiny_mattersim(tmp_path_factory.mktemp("mattersim") / "tiny.pth", training_frames)


@pytest.fixture(scope="session", autouse=True)
def scratch_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A HOME for this process and its servers: tests never write to the real one."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        yield home


def start_service(checkpoint: str | Path, **env: str) -> ServiceProcess:
    """A MatterSim server process of this environment (one torch thread)."""
    return offline_service("umlip_mattersim", checkpoint, dtype="float32", **env)


@pytest.fixture(scope="session")
def mattersim_service(tiny_model: Path) -> Iterator[ServiceProcess]:
    """A real MatterSim server with the tiny model, shared by the session."""
    with start_service(tiny_model) as service:
        yield service
