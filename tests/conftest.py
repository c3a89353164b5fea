"""Shared test fixtures: repository paths and real service processes."""

from __future__ import annotations

import os

# One BLAS thread per process, as the CLI sets: the relaxation runs many Python threads.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from shared_data import REPO_ROOT

from umlip_wire.process import ServiceProcess


def service_python(name: str) -> Path:
    """Interpreter of ``services/<name>``'s own environment, created from its lock file."""
    project = REPO_ROOT / "services" / name
    python = project / ".venv" / "bin" / "python"
    if not python.exists():
        subprocess.run(
            ["uv", "sync", "--frozen", "--extra", "test", "--project", str(project)],
            check=True,
            capture_output=True,
        )
    return python


@pytest.fixture(scope="session")
def emt_python() -> Path:
    """Python of the EMT service environment (services/emt/.venv)."""
    return service_python("emt")


@pytest.fixture(scope="session")
def chgnet_python() -> Path:
    """Python of the CHGNet service environment (services/chgnet/.venv)."""
    return service_python("chgnet")


@pytest.fixture(scope="session")
def emt_service(emt_python: Path) -> Iterator[ServiceProcess]:
    """A real EMT server process on a free loopback port, shared by the session."""
    with ServiceProcess(python=emt_python, module="umlip_emt") as service:
        yield service
