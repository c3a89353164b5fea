"""The Dockerfiles, read as text: one per service, all built the same way.

Each service image installs its own lock file, runs as a non-root user, serves with
``python -m umlip_<name>``, probes grpc.health.v1 in its HEALTHCHECK and labels its model
package at the version its lock pins; every file a Dockerfile copies exists. The real
builds run in scripts/container-e2e.sh.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(
    p.parent.name
    for p in (REPO_ROOT / "services").glob("*/pyproject.toml")
    if p.parent.name != "common"
)
TORCH_SERVICES = ["chgnet", "mace", "mattersim", "sevennet"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def args_of(path: Path) -> dict[str, str]:
    """ARG name -> default ('' when none), over all stages."""
    found = {}
    for keyword, rest in instructions(path):
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            found[name] = default.strip('"')
    return found


def one(path: Path, keyword: str) -> str:
    (value,) = [rest for k, rest in instructions(path) if k == keyword]
    return value


def copied_sources(path: Path) -> list[str]:
    """Paths the build context must have for the Dockerfile's COPY instructions."""
    service = args_of(path).get("SERVICE", "")
    sources = []
    for keyword, rest in instructions(path):
        if keyword == "COPY" and "--from=" not in rest:
            parts = rest.split()
            sources += [p.replace("${SERVICE}", service) for p in parts[:-1]]
    return sources


def locked_version(service: str, package: str) -> str:
    lock = tomllib.loads((REPO_ROOT / "services" / service / "uv.lock").read_text())
    (version,) = [p["version"] for p in lock["package"] if p["name"] == package]
    return version


def test_the_services_are_the_expected_ones() -> None:
    assert {"emt", *TORCH_SERVICES} <= set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_service_image_installs_its_lock_and_serves_its_module(service: str) -> None:
    dockerfile = REPO_ROOT / "services" / service / "Dockerfile"
    assert dockerfile.is_file(), f"services/{service} has no Dockerfile"
    args = args_of(dockerfile)
    assert args["SERVICE"] == service
    for name in (
        "BASE_IMAGE",
        "TOOLS_IMAGE",
        "TORCH_VARIANT",
        "TORCH_INDEX_URL",
        "TORCH_FIND_LINKS",
        "VERSION",
        "MODEL_PACKAGE",
    ):
        assert name in args, name
    entrypoint = json.loads(one(dockerfile, "ENTRYPOINT"))
    assert entrypoint == ["/opt/venv/bin/python", "-m", f"umlip_{service}"]
    assert (REPO_ROOT / "services" / service / "src" / f"umlip_{service}").is_dir()
    assert one(dockerfile, "USER") == "10001:10001"
    health = one(dockerfile, "HEALTHCHECK")
    assert health.endswith('CMD ["/opt/venv/bin/python", "/usr/local/lib/umlip/healthcheck.py"]')
    runs = " ".join(rest for k, rest in instructions(dockerfile) if k == "RUN")
    assert "install.sh deps /opt/umlip/services/${SERVICE}" in runs
    labels = one(dockerfile, "LABEL")
    for label in (
        "org.opencontainers.image.title",
        "org.opencontainers.image.version",
        "io.umlip.model.name",
        "io.umlip.model.package",
    ):
        assert label in labels, label
    package, _, version = args["MODEL_PACKAGE"].partition("==")
    assert version == locked_version(service, package), "MODEL_PACKAGE label vs uv.lock"


@pytest.mark.parametrize("service", TORCH_SERVICES)
def test_torch_services_default_to_a_cuda_base(service: str) -> None:
    args = args_of(REPO_ROOT / "services" / service / "Dockerfile")
    assert args["BASE_IMAGE"].startswith("nvidia/cuda:")
    assert args["TORCH_VARIANT"] == ""  # PyPI's default torch build: CUDA on Linux x86_64


@pytest.mark.parametrize("service", ["mace", "mattersim"])
def test_foundation_model_services_can_bake_weights(service: str) -> None:
    dockerfile = REPO_ROOT / "services" / service / "Dockerfile"
    assert "BAKE_CHECKPOINT" in args_of(dockerfile)
    runs = " ".join(rest for k, rest in instructions(dockerfile) if k == "RUN")
    assert f"warm.py umlip_{service}" in runs


def test_orchestrator_image() -> None:
    dockerfile = REPO_ROOT / "orchestrator" / "Dockerfile"
    assert json.loads(one(dockerfile, "ENTRYPOINT")) == ["/opt/venv/bin/umlip"]
    assert one(dockerfile, "USER") == "10001:10001"
    assert "RAY_EXTRAS" in args_of(dockerfile)
    runs = " ".join(rest for k, rest in instructions(dockerfile) if k == "RUN")
    assert "install.sh deps /opt/umlip --package umlip-orchestrator" in runs


@pytest.mark.parametrize(
    "dockerfile",
    [f"services/{s}/Dockerfile" for s in SERVICES] + ["orchestrator/Dockerfile"],
)
def test_every_copied_path_exists(dockerfile: str) -> None:
    sources = copied_sources(REPO_ROOT / dockerfile)
    assert sources
    missing = [s for s in sources if not (REPO_ROOT / s).exists()]
    assert not missing, missing
