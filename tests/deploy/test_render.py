"""deploy/render.py: every deployment file follows from the service descriptions.

- The committed compose, Kubernetes and endpoint files are exactly what the descriptions
  give (the drift test: edit a service.toml, run the command, commit both).
- A service dropped in with one command (``new_service.py``, touching only its own
  folder) appears, after rendering, in the compose stack (built by the one Dockerfile,
  benchmarked, in the endpoint list, GPU/CPU/TLS variants) and in the rendered
  Kubernetes manifests (a valid Deployment and Service, and the endpoint ConfigMap).
- The descriptions are validated: a wrong name, module or shared port is refused.
"""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from test_k8s_manifests import OLDEST_VERSION, kustomize, model_deployments

from umlip_orchestrator.service_descriptions import ServiceDescriptionError, read_descriptions

REPO_ROOT = Path(__file__).resolve().parents[2]
RENDER = REPO_ROOT / "deploy" / "render.py"


def render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RENDER), *args], capture_output=True, text=True, timeout=120
    )


def test_committed_files_are_what_the_descriptions_give() -> None:
    result = render("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_notices_drift(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO_ROOT / "deploy/docker/new_service.py"), "drift",
                    "--dest", str(tmp_path)], check=True, capture_output=True)  # fmt: skip
    result = render("--check", "--root", str(tmp_path))
    assert result.returncode == 1
    assert "out of date: deploy/compose/docker-compose.yml" in result.stdout
    assert "out of date: deploy/k8s/models/drift.yaml" in result.stdout


def test_files_of_a_service_that_no_longer_fine_tunes_are_removed(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO_ROOT / "deploy/docker/new_service.py"), "tuned",
                    "--dest", str(tmp_path)], check=True, capture_output=True)  # fmt: skip
    module = tmp_path / "services/tuned/src/umlip_tuned/finetune.py"
    module.write_text('"""Fine-tuning of tuned."""\n')
    assert render("--root", str(tmp_path)).returncode == 0
    job = tmp_path / "deploy/k8s/finetune/tuned/kustomization.yaml"
    component = tmp_path / "deploy/k8s/finetuned/tuned/kustomization.yaml"
    assert job.is_file() and component.is_file()
    module.unlink()
    result = render("--check", "--root", str(tmp_path))
    assert result.returncode == 1
    assert "out of date: deploy/k8s/finetune/tuned/kustomization.yaml" in result.stdout
    assert render("--root", str(tmp_path)).returncode == 0
    assert not job.parent.exists() and not component.parent.exists()
    assert (tmp_path / "deploy/k8s/finetune/base/job.yaml").is_file()  # hand-written, kept
    assert render("--check", "--root", str(tmp_path)).returncode == 0


def changed_files(a: Path, b: Path) -> list[str]:
    """Files that differ or exist on one side only, relative paths."""
    found = []

    def walk(comparison: filecmp.dircmp, prefix: str) -> None:
        found.extend(prefix + n for n in [*comparison.diff_files, *comparison.left_only,
                                           *comparison.right_only])  # fmt: skip
        for name, sub in comparison.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(a, b, ignore=[".venv", "__pycache__", ".git"]), "")
    return sorted(found)


def test_a_dropped_in_service_reaches_compose_and_kubernetes(tmp_path: Path) -> None:
    pristine, tree = tmp_path / "pristine", tmp_path / "tree"
    new_service = REPO_ROOT / "deploy/docker/new_service.py"
    subprocess.run([sys.executable, str(new_service), "other", "--dest", str(pristine)],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([sys.executable, str(new_service), "newmodel", "--dest", str(tree)],
                   check=True, capture_output=True)  # fmt: skip
    # The drop-in itself wrote only its own folder.
    touched = changed_files(pristine, tree)
    assert touched == ["services/newmodel", "services/other"], touched
    # A model that fine-tunes has a fine-tuning module in its package (`other` has none).
    module = tree / "services/newmodel/src/umlip_newmodel/finetune.py"
    module.write_text('"""Fine-tuning of newmodel."""\n')
    for root in (pristine, tree):  # the one command that derives everything else
        result = render("--root", str(root))
        assert result.returncode == 0, result.stderr
    rendered = [p for p in changed_files(pristine, tree) if not p.startswith("services/")]
    assert rendered == ["deploy/compose/docker-compose.yml", "deploy/compose/endpoints.json",
                        "deploy/compose/finetune.yml", "deploy/compose/tls.yml",
                        "deploy/k8s/finetune/newmodel", "deploy/k8s/finetuned/newmodel",
                        "deploy/k8s/kustomization.yaml",
                        "deploy/k8s/models/newmodel.yaml", "deploy/k8s/models/other.yaml",
                        "deploy/k8s/orchestrator/endpoints.json"], rendered  # fmt: skip
    finetune = yaml.safe_load((tree / "deploy/compose/finetune.yml").read_text())["services"]
    assert finetune["finetune-newmodel"]["entrypoint"][2] == "umlip_newmodel.finetune"
    (job,) = kustomize(tree / "deploy/k8s/finetune/newmodel")
    kubernetes_validate.validate(job, OLDEST_VERSION, strict=True)
    assert job["metadata"]["name"] == "finetune-newmodel"

    port = read_descriptions(tree / "services")["newmodel"].port
    compose = yaml.safe_load((tree / "deploy/compose/docker-compose.yml").read_text())
    service = compose["services"]["newmodel"]
    assert service["build"]["dockerfile"] == "services/Dockerfile"
    assert service["build"]["args"]["SERVICE"] == "newmodel"
    assert service["environment"]["UMLIP_PORT"] == str(port)
    assert compose["services"]["benchmark"]["depends_on"]["newmodel"] == {
        "condition": "service_healthy"
    }
    endpoints = json.loads((tree / "deploy/compose/endpoints.json").read_text())["services"]
    assert endpoints["newmodel"] == f"127.0.0.1:{port}"

    docs = kustomize(tree / "deploy" / "k8s")
    (deployment,) = [d for d in model_deployments(docs) if d["metadata"]["name"] == "newmodel"]
    kubernetes_validate.validate(deployment, OLDEST_VERSION, strict=True)
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "umlip/newmodel:0.1.0"
    )
    services = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "newmodel"]
    assert services and services[0]["spec"]["clusterIP"] == "None"
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    listed = json.loads(config["data"]["endpoints.json"])["services"]
    assert listed["newmodel"] == "dns:///newmodel.umlip.svc.cluster.local:50051"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('name = "emt"', 'name = "other"'), "must be the folder's name"),
        (('module = "umlip_emt"', 'module = "emt"'), "module must be umlip_emt"),
        (("port = 50051", "port = 50052"), "share port 50052"),
        (("gpu = false", 'gpu = "no"'), "gpu must be a bool"),
    ],
)
def test_invalid_descriptions_are_refused(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    for name in ("emt", "chgnet"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "service.toml").write_text(
            (REPO_ROOT / "services" / name / "service.toml").read_text()
        )
    path = tmp_path / "emt" / "service.toml"
    path.write_text(path.read_text().replace(*change))
    with pytest.raises(ServiceDescriptionError, match=message):
        read_descriptions(tmp_path)
