"""The Dockerfiles, read as text: one parameterised Dockerfile for every service.

``services/Dockerfile`` builds any service folder (``--build-arg SERVICE=<name>``): it
installs that service's own lock file, runs as a non-root user, serves with ``python -m
umlip_<name>``, probes grpc.health.v1 in its HEALTHCHECK and labels the model package
and checkpoint; the compose files pass each service's arguments from its service.toml,
and the label's package version is the one the service's lock pins. No service folder
has a Dockerfile of its own. Every file a Dockerfile copies exists. The real builds run
in scripts/container-e2e.sh.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from umlip_orchestrator.service_descriptions import read_descriptions

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "services" / "Dockerfile"
DESCRIPTIONS = read_descriptions(REPO_ROOT / "services")
SERVICES = sorted(DESCRIPTIONS)
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


def copied_sources(path: Path, service: str = "") -> list[str]:
    """Paths the build context must have for the Dockerfile's COPY instructions."""
    service = service or args_of(path).get("SERVICE", "")
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


def test_every_service_folder_is_described_and_has_no_dockerfile_of_its_own() -> None:
    folders = sorted(p.parent.name for p in (REPO_ROOT / "services").glob("*/pyproject.toml"))
    assert sorted([*SERVICES, "common"]) == folders
    assert {"emt", *TORCH_SERVICES} <= set(SERVICES)
    assert not list((REPO_ROOT / "services").glob("*/Dockerfile"))


def test_one_dockerfile_builds_any_service_and_serves_its_module() -> None:
    args = args_of(DOCKERFILE)
    for name in ("SERVICE", "BASE_IMAGE", "TOOLS_IMAGE", "TORCH_VARIANT", "TORCH_INDEX_URL",
                 "TORCH_FIND_LINKS", "VERSION", "MODEL_PACKAGE", "CHECKPOINT",
                 "BAKE_CHECKPOINT"):  # fmt: skip
        assert name in args, name
    assert args["SERVICE"] == ""  # required: the build fails without it
    assert args["BASE_IMAGE"].startswith("nvidia/cuda:")  # production: CUDA torch
    assert args["TORCH_VARIANT"] == ""  # PyPI's default torch build: CUDA on Linux x86_64
    assert json.loads(one(DOCKERFILE, "ENTRYPOINT")) == ["/usr/local/bin/umlip-service"]
    runs = " ".join(rest for k, rest in instructions(DOCKERFILE) if k == "RUN")
    assert 'module="umlip_$(echo "${SERVICE}" | tr - _)"' in runs
    assert "exec /opt/venv/bin/python -m %s" in runs  # the entrypoint runs that module
    assert "install.sh deps /opt/umlip/services/${SERVICE}" in runs
    assert 'warm.py "umlip_$(echo "${SERVICE}" | tr - _)"' in runs  # BAKE_CHECKPOINT
    assert one(DOCKERFILE, "USER") == "10001:10001"
    health = one(DOCKERFILE, "HEALTHCHECK")
    assert health.endswith('CMD ["/opt/venv/bin/python", "/usr/local/lib/umlip/healthcheck.py"]')
    labels = one(DOCKERFILE, "LABEL")
    for label in ("org.opencontainers.image.title", "org.opencontainers.image.version",
                  'io.umlip.model.name="${SERVICE}"', 'io.umlip.model.package="${MODEL_PACKAGE}"',
                  'io.umlip.model.checkpoint="${CHECKPOINT}"'):  # fmt: skip
        assert label in labels, label


@pytest.mark.parametrize("service", SERVICES)
def test_compose_builds_each_service_with_its_description(service: str) -> None:
    description = DESCRIPTIONS[service]
    compose = yaml.safe_load((REPO_ROOT / "deploy/compose/docker-compose.yml").read_text())
    build = compose["services"][service]["build"]
    assert build["dockerfile"] == "services/Dockerfile"
    assert build["args"]["SERVICE"] == service
    assert build["args"]["MODEL_PACKAGE"] == description.model_package
    assert build["args"]["CHECKPOINT"] == description.checkpoint
    assert ("BASE_IMAGE" in build["args"]) is not description.gpu  # torch: the CUDA default
    package, _, version = description.model_package.partition("==")
    assert version == locked_version(service, package), "model_package vs uv.lock"
    assert (REPO_ROOT / "services" / service / "src" / description.module).is_dir()


def test_orchestrator_image() -> None:
    dockerfile = REPO_ROOT / "orchestrator" / "Dockerfile"
    assert json.loads(one(dockerfile, "ENTRYPOINT")) == ["/opt/venv/bin/umlip"]
    assert one(dockerfile, "USER") == "10001:10001"
    assert "RAY_EXTRAS" in args_of(dockerfile)
    steps = instructions(dockerfile)
    runs = " ".join(rest for k, rest in steps if k == "RUN")
    assert "install.sh deps /tmp/lock --package umlip-orchestrator" in runs
    # The contract and the wire package, not the server harness, built into wheels.
    sources = copied_sources(dockerfile)
    assert {"proto", "wire", "orchestrator/src", "uv.lock"} <= set(sources)
    assert not [s for s in sources if s.startswith("services/")], sources
    assert "uv build --wheel" in runs and "for project in proto wire orchestrator" in runs
    assert "services/common" not in runs
    # The image itself installs the wheels (not editable) and copies no source.
    last = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    final = steps[last:]
    assert [rest for k, rest in final if k == "COPY"] == [
        "deploy/docker/install.sh /usr/local/lib/umlip/"
    ]
    final_runs = " ".join(rest for k, rest in final if k == "RUN")
    assert "install.sh local /tmp/wheels/*.whl" in final_runs
    assert "local -e" not in final_runs and "/opt/umlip" not in final_runs


def test_service_image_installs_the_wire_package_with_the_harness() -> None:
    sources = copied_sources(DOCKERFILE, "emt")
    assert {"proto/src", "wire/pyproject.toml", "wire/src", "services/common/src"} <= set(sources)
    runs = " ".join(rest for k, rest in instructions(DOCKERFILE) if k == "RUN")
    assert "/opt/umlip/proto /opt/umlip/wire /opt/umlip/services/common" in " ".join(runs.split())


@pytest.mark.parametrize("service", SERVICES)
def test_every_copied_path_exists(service: str) -> None:
    sources = copied_sources(DOCKERFILE, service)
    assert sources
    missing = [s for s in sources if not (REPO_ROOT / s).exists()]
    assert not missing, missing
    orchestrator = copied_sources(REPO_ROOT / "orchestrator" / "Dockerfile")
    assert not [s for s in orchestrator if not (REPO_ROOT / s).exists()]
