"""Fine-tuning deployments: the compose one-off services and the Kubernetes Jobs, each
running a model's own fine-tuning module in that model's own image, checked offline."""

from __future__ import annotations

import os
from pathlib import Path

import kubernetes_validate
import pytest
from test_compose_config import render
from test_k8s_manifests import OLDEST_VERSION, kustomize

REPO_ROOT = Path(__file__).resolve().parents[2]
FINETUNE = REPO_ROOT / "deploy" / "k8s" / "finetune"
MODELS = ("chgnet", "mace", "mattersim", "sevennet")


def test_every_model_has_a_finetuning_module_in_its_package() -> None:
    for model in MODELS:
        assert (REPO_ROOT / "services" / model / "src" / f"umlip_{model}" / "finetune.py").is_file()


@pytest.mark.parametrize("model", MODELS)
def test_compose_one_off_runs_the_models_own_trainer_in_its_own_image(model: str) -> None:
    services = render("docker-compose.yml", "cpu.yml", "finetune.yml")["services"]
    one_off = services[f"finetune-{model}"]
    assert one_off["profiles"] == ["finetune"]  # `up` never starts it
    assert one_off["image"].split(":")[0] == services[model]["image"].split(":")[0]
    entrypoint = one_off["entrypoint"]
    assert entrypoint[:3] == ["/opt/venv/bin/python", "-m", f"umlip_{model}.finetune"]
    assert entrypoint[entrypoint.index("--out") + 1] == f"/checkpoints/{model}-ft"
    assert one_off["network_mode"] == "none"
    mounts = {v.split(":")[1]: v for v in one_off["volumes"]}
    assert mounts["/finetune"].endswith(":ro") and not mounts["/checkpoints"].endswith(":ro")
    # The model service serves what the one-off wrote, when told to.
    chosen = render("docker-compose.yml", **{f"UMLIP_{model.upper()}_CHECKPOINT": "/checkpoints/x"})
    assert chosen["services"][model]["environment"]["UMLIP_CHECKPOINT"] == "/checkpoints/x"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("version", [OLDEST_VERSION, "latest"])
def test_kubernetes_job_is_valid_and_runs_the_models_trainer(model: str, version: str) -> None:
    version = kubernetes_validate.latest_version() if version == "latest" else version
    (job,) = kustomize(FINETUNE / model)
    kubernetes_validate.validate(job, version, strict=True)
    assert job["kind"] == "Job" and job["metadata"]["name"] == f"finetune-{model}"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[0] == f"umlip/{model}"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["UMLIP_FINETUNE_MODULE"] == f"umlip_{model}.finetune"
    assert env["UMLIP_FINETUNE_OUT"] == f"/checkpoints/{model}-ft"
    assert container["command"][-1] == "$(UMLIP_FINETUNE_MODULE)"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    claims = {
        v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]
    }
    volumes = kustomize(FINETUNE / "volumes")
    for doc in volumes:
        kubernetes_validate.validate(doc, version, strict=True)
    assert claims == {doc["metadata"]["name"] for doc in volumes}


def overlay(tmp_path: Path, base: str, model: str) -> list[dict]:
    """``kubectl kustomize`` of an overlay of ``deploy/<base>`` with the model's
    ``finetuned`` Component, as a user writes it (kustomize wants relative paths)."""
    folder = tmp_path / f"{base}-{model}"
    folder.mkdir()
    deploy = Path(os.path.relpath(REPO_ROOT / "deploy", folder))
    (folder / "kustomization.yaml").write_text(
        f"resources: [{deploy / base}]\ncomponents: [{deploy / 'k8s' / 'finetuned' / model}]\n"
    )
    return kustomize(folder)


def deployment(docs: list[dict], name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("base", ["k8s", "k8s-tls"])
def test_finetuned_component_serves_what_the_job_wrote(
    tmp_path: Path, model: str, base: str
) -> None:
    docs = overlay(tmp_path, base, model)
    plain = kustomize(REPO_ROOT / "deploy" / base)
    served = deployment(docs, model)
    for version in (OLDEST_VERSION, kubernetes_validate.latest_version()):
        kubernetes_validate.validate(served, version, strict=True)
    spec = served["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (job,) = kustomize(FINETUNE / model)
    job_env = {
        e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["UMLIP_CHECKPOINT"] == job_env["UMLIP_FINETUNE_OUT"] == f"/checkpoints/{model}-ft"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["checkpoints"] == {"name": "checkpoints", "mountPath": "/checkpoints",
                                     "readOnly": True}  # fmt: skip
    volumes = {v["name"]: v for v in spec["volumes"]}
    claim = volumes["checkpoints"]["persistentVolumeClaim"]
    job_claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in job["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "checkpoints"
    }
    assert claim == {"claimName": "umlip-checkpoints", "readOnly": True} and job_claims == {
        "umlip-checkpoints"
    }
    # What the base had is kept (the TLS secret volume, the model cache), and nothing else
    # of the stack changes.
    before = deployment(plain, model)["spec"]["template"]["spec"]
    assert {v["name"] for v in before.get("volumes", [])} <= set(volumes)
    assert set(env) - {e["name"] for e in before["containers"][0]["env"]} <= {"UMLIP_CHECKPOINT"}
    others = [d for d in docs if not (d["kind"] == "Deployment" and d["metadata"]["name"] == model)]
    untouched = [
        d for d in plain if not (d["kind"] == "Deployment" and d["metadata"]["name"] == model)
    ]
    assert others == untouched
