"""``install.sh check``: `uv pip check` less what a service's lock leaves out or replaces
on purpose (``exclude-dependencies``; ``override-dependencies`` at the installed
version), e.g. HIENet's pinned torch 2.9.1 replaced by the project's torch.

`uv` is replaced by a script printing what `uv pip check` prints (fault injection of
its report); the filter and the import check are install.sh's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL = REPO_ROOT / "deploy" / "docker" / "install.sh"
HIENET = REPO_ROOT / "services" / "hienet"


def check(tmp_path: Path, report: str) -> subprocess.CompletedProcess[str]:
    """Runs ``install.sh check services/hienet json`` with `uv pip check` saying ``report``."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    fake_uv = tools / "uv"
    (tmp_path / "report.txt").write_text(report)
    fake_uv.write_text(f"#!/bin/sh\ncat {tmp_path / 'report.txt'}\nexit 1\n")
    fake_uv.chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    if not python.exists():
        python.symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "UMLIP_VENV": str(venv)}
    return subprocess.run(
        [str(INSTALL), "check", str(HIENET), "json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )


def line(requirement: str, installed: str) -> str:
    return f"The package `hienet` requires `{requirement}`, but {installed}"


@pytest.mark.parametrize(
    "report",
    [
        line("torch==2.9.1", "`2.13.0+cpu` is installed"),  # the override, CPU build
        line("torch==2.9.1", "`2.13.0` is installed"),  # the override, CUDA build
        line("pymatviz", "it's not installed"),  # excluded
    ],
)
def test_what_the_lock_replaces_or_leaves_out_on_purpose_passes(
    tmp_path: Path, report: str
) -> None:
    result = check(tmp_path, f"Checked 60 packages\nFound 1 incompatibility\n{report}\n")
    assert result.returncode == 0, result.stderr
    assert "consistent (1 exclusions or overrides of the lock)" in result.stderr


@pytest.mark.parametrize(
    "report",
    [
        line("torch==2.9.1", "`2.12.0+cpu` is installed"),  # not the override's version
        line("numpy<2", "`2.1.0` is installed"),  # not overridden at all
        line("ase", "it's not installed"),  # not excluded
    ],
)
def test_any_other_inconsistency_fails_the_build(tmp_path: Path, report: str) -> None:
    result = check(tmp_path, f"Found 1 incompatibility\n{report}\n")
    assert result.returncode != 0
    assert report in result.stderr
