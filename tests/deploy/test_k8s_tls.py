"""deploy/k8s-tls: the mutual-TLS overlay of deploy/k8s, rendered by kustomize.

The rendered resources are valid (the same strict schemas as the base), every potential
serves TLS from the umlip-tls Secret and requires client certificates, probes run the
image's health check (the kubelet's gRPC probe cannot speak TLS), and the RayJob's head
and workers present the client certificate of the umlip-tls-client Secret.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from test_k8s_manifests import (
    OLDEST_VERSION,
    REPO_ROOT,
    Doc,
    kustomize,
    model_deployments,
    pod_templates,
    rayjob,
)

from umlip_serve import Settings

OVERLAY = REPO_ROOT / "deploy" / "k8s-tls"
HEALTHCHECK = "/usr/local/lib/umlip/healthcheck.py"


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return kustomize(OVERLAY)


def mounted_files(spec: Doc, container: Doc, secret: str) -> str:
    """The mount path of ``secret`` in ``container`` (asserting it is mounted)."""
    (volume,) = [v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == secret]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount.get("readOnly") is True
    return mount["mountPath"]


@pytest.mark.parametrize("version", [OLDEST_VERSION, "latest"])
def test_the_overlay_is_valid(rendered: list[Doc], version: str) -> None:
    version = kubernetes_validate.latest_version() if version == "latest" else version
    for doc in rendered:
        if not doc["apiVersion"].startswith("ray.io/"):
            kubernetes_validate.validate(doc, version, strict=True)
    for template in pod_templates(rayjob(rendered)):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "ray"}}
        kubernetes_validate.validate({**wrapped, "template": template}, version, strict=True)


def test_every_potential_serves_mutual_tls_from_the_secret(rendered: list[Doc]) -> None:
    deployments = model_deployments(rendered)
    assert {d["metadata"]["name"] for d in deployments} >= {"chgnet", "mace", "sevennet"}
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        settings = Settings.from_env(env)  # the harness reads these very values
        assert not settings.allow_plaintext
        folder = mounted_files(spec, container, "umlip-tls")
        assert str(settings.tls_cert).startswith(folder)
        assert str(settings.tls_key).startswith(folder)
        assert str(settings.tls_client_ca).startswith(folder)  # client certificates required
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert set(container[probe]) & {"grpc", "exec"} == {"exec"}, probe
            assert container[probe]["exec"]["command"][-1] == HEALTHCHECK
        assert env["UMLIP_TLS_CA"].startswith(folder)  # the probe is a client too


def test_the_probe_script_is_where_the_images_put_it() -> None:
    text = (REPO_ROOT / "services" / "Dockerfile").read_text()
    assert "deploy/docker/healthcheck.py" in text and str(Path(HEALTHCHECK).parent) in text


def test_ray_head_and_workers_present_the_client_certificate(rendered: list[Doc]) -> None:
    cluster = rayjob(rendered)["spec"]["rayClusterSpec"]
    specs = [cluster["headGroupSpec"]["template"]["spec"]] + [
        group["template"]["spec"] for group in cluster["workerGroupSpecs"]
    ]
    for spec in specs:
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        folder = mounted_files(spec, container, "umlip-tls-client")
        for name in ("UMLIP_TLS_CA", "UMLIP_TLS_CLIENT_CERT", "UMLIP_TLS_CLIENT_KEY"):
            assert env[name].startswith(folder), name
        assert "RAY_AUTH_TOKEN" in env  # the base's token survives the patch
