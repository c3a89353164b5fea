"""The helpers the images run, against real EMT server processes (no Docker).

``healthcheck.py`` (the HEALTHCHECK) answers 0 only for a SERVING service and finds the
service from the container's own ``UMLIP_*`` settings; ``warm.py`` (weight baking) loads a
service's model; ``new_service.py`` turns the EMT template into a new service that serves
under its new name, unchanged otherwise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from umlip_orchestrator.client import PotentialClient
from umlip_orchestrator.service_descriptions import read_description, read_descriptions
from umlip_wire.process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER = REPO_ROOT / "deploy" / "docker"


def probe(
    python: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), str(DOCKER / "healthcheck.py"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthcheck_passes_for_a_serving_service(
    emt_python: Path, emt_service: ServiceProcess
) -> None:
    result = probe(emt_python, emt_service.target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{emt_service.target}: SERVING"


def test_healthcheck_reads_the_containers_settings(
    emt_python: Path, emt_service: ServiceProcess
) -> None:
    """A wildcard UMLIP_HOST is probed on loopback, as in an image (UMLIP_HOST=0.0.0.0)."""
    result = probe(emt_python, env={"UMLIP_HOST": "0.0.0.0", "UMLIP_PORT": str(emt_service.port)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_healthcheck_fails_without_a_service(emt_python: Path) -> None:
    result = probe(emt_python, f"127.0.0.1:{closed_port()}", "--timeout", "1")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stdout or "DEADLINE_EXCEEDED" in result.stdout


def test_warm_loads_the_model_of_a_service_package(emt_python: Path) -> None:
    result = subprocess.run(
        [str(emt_python), str(DOCKER / "warm.py"), "umlip_emt"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("emt: ase-emt-analytic")


def test_new_service_from_the_template_serves_under_its_name(
    emt_python: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, str(DOCKER / "new_service.py"), "emt2", "--dest", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    service = tmp_path / "services" / "emt2"
    assert not (service / "Dockerfile").exists()  # the one services/Dockerfile builds it
    assert 'name = "umlip-emt2"' in (service / "pyproject.toml").read_text()
    assert 'name = "umlip-emt2"' in (service / "uv.lock").read_text()
    described = read_description(service / "service.toml")
    assert (described.name, described.module, described.default) == ("emt2", "umlip_emt2", True)
    ports = [d.port for d in read_descriptions(REPO_ROOT / "services").values()]
    assert described.port == max(ports) + 1
    # A copy of the repository, so tmp_path is a build context and a tree to render.
    for path in (
        "proto/src",
        "wire/src",
        "services/common/src",
        "services/Dockerfile",
        "deploy/docker/install.sh",
        "deploy/render.py",
        "services/chgnet/uv.lock",
    ):
        assert (tmp_path / path).exists(), path  # fmt: skip
    assert not list(tmp_path.glob("services/*/.venv"))
    with (
        ServiceProcess(
            python=emt_python,
            module="umlip_emt2",
            env={"PYTHONPATH": str(service / "src")},
        ) as process,
        PotentialClient(process.target) as client,
    ):
        info = client.info()
        assert info.model_name == "emt2"
        assert info.checkpoint_name == "ase-emt-analytic"


def test_new_service_refuses_bad_names(tmp_path: Path) -> None:
    for name in ("EMT3", "emt", "my-model"):
        result = subprocess.run(
            [sys.executable, str(DOCKER / "new_service.py"), name, "--dest", str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode != 0, name


@pytest.mark.parametrize("script", ["scripts/container-e2e.sh", "deploy/docker/install.sh"])
def test_shell_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(REPO_ROOT / script)], check=True, timeout=30)
