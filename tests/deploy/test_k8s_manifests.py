"""deploy/k8s, rendered by kustomize and checked offline.

Every built-in kind is validated (strictly: unknown fields fail) against the Kubernetes
OpenAPI schemas that the kubernetes-validate package ships, for the oldest version with
gRPC probes and the newest it knows; the KubeRay RayJob against a small JSON schema of
its structure, and its pod templates against Kubernetes' PodTemplateSpec. Then what the
deployment relies on: GPU requests, gRPC probes on the served port, headless Services,
and an endpoint ConfigMap that names each of them with a ``dns:///`` target.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
RAYJOB_SCHEMA = Path(__file__).parent / "schemas" / "rayjob.schema.json"
#: gRPC probes are on by default from Kubernetes 1.24; the oldest schema shipped is 1.25.
OLDEST_VERSION = "1.25.0"
DNS_TARGET = re.compile(
    r"^dns:///(?P<service>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc\.cluster\.local:(?P<port>\d+)$"
)

Doc = dict[str, Any]


def kustomize(path: Path) -> list[Doc]:
    """``kubectl kustomize PATH`` as a list of resources."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed (it renders the kustomize manifests)")
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    """``kubectl kustomize deploy/k8s`` as a list of resources."""
    return kustomize(K8S)


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def model_deployments(docs: list[Doc]) -> list[Doc]:
    return [
        doc
        for doc in of_kind(docs, "Deployment")
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == "potential"
    ]


def endpoints(docs: list[Doc]) -> dict[str, str]:
    config_map = named(docs, "ConfigMap", "umlip-endpoints")
    return json.loads(config_map["data"]["endpoints.json"])["services"]


def rayjob(docs: list[Doc]) -> Doc:
    (job,) = of_kind(docs, "RayJob")
    return job


def pod_templates(job: Doc) -> list[Doc]:
    """The head's, the workers' and the job submitter's pod templates."""
    cluster = job["spec"]["rayClusterSpec"]
    return (
        [cluster["headGroupSpec"]["template"]]
        + [group["template"] for group in cluster.get("workerGroupSpecs", [])]
        + [job["spec"]["submitterPodTemplate"]]
    )


def test_renders_the_expected_resources(rendered: list[Doc]) -> None:
    kinds = sorted({doc["kind"] for doc in rendered})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "RayJob",
        "Service",
    ]
    namespaced = [doc for doc in rendered if doc["kind"] != "Namespace"]
    assert {doc["metadata"]["namespace"] for doc in namespaced} == {"umlip"}
    models = {d["metadata"]["name"] for d in model_deployments(rendered)}
    assert {"chgnet", "mace", "mattersim", "sevennet"} <= models


@pytest.mark.parametrize("version", [OLDEST_VERSION, "latest"])
def test_builtin_kinds_match_the_kubernetes_schemas(rendered: list[Doc], version: str) -> None:
    version = kubernetes_validate.latest_version() if version == "latest" else version
    builtin = [doc for doc in rendered if not doc["apiVersion"].startswith("ray.io/")]
    assert len(builtin) == len(rendered) - 1  # all but the RayJob
    for doc in builtin:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_is_strict(rendered: list[Doc]) -> None:
    """A misspelled field fails (so the check above does check something)."""
    deployment = copy.deepcopy(model_deployments(rendered)[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_VERSION, strict=True)


def test_rayjob_matches_its_schema(rendered: list[Doc]) -> None:
    schema = json.loads(RAYJOB_SCHEMA.read_text())
    jsonschema.validate(rayjob(rendered), schema)
    broken = copy.deepcopy(rayjob(rendered))
    broken["spec"]["clusterSelector"] = {"ray.io/cluster": "elsewhere"}
    with pytest.raises(jsonschema.ValidationError):  # a cluster spec or a selector, not both
        jsonschema.validate(broken, schema)


def test_rayjob_pod_templates_are_valid_pod_templates(rendered: list[Doc]) -> None:
    for template in pod_templates(rayjob(rendered)):
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "ray"},
            "template": template,
        }
        kubernetes_validate.validate(wrapped, OLDEST_VERSION, strict=True)


def test_models_request_gpus_and_probe_grpc_health_on_the_served_port(
    rendered: list[Doc],
) -> None:
    for deployment in model_deployments(rendered):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["image"].startswith(f"umlip/{name}:")
        env = {item["name"]: item["value"] for item in container["env"]}
        port = int(env["UMLIP_PORT"])
        assert env["UMLIP_HOST"] == "0.0.0.0"
        assert env["UMLIP_DEVICE"] == "cuda"
        assert [p["containerPort"] for p in container["ports"]] == [port]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port, (name, probe)
        resources = container["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert resources["requests"]["nvidia.com/gpu"] == 1
        assert "memory" in resources["requests"] and "cpu" in resources["requests"]
        # In-flight batches finish within the harness's grace period after SIGTERM.
        grace = float(env.get("UMLIP_GRACE_PERIOD_S", "10"))
        assert pod["terminationGracePeriodSeconds"] > grace


def test_each_model_has_a_headless_service_selecting_its_pods(rendered: list[Doc]) -> None:
    for deployment in model_deployments(rendered):
        name = deployment["metadata"]["name"]
        service = named(rendered, "Service", name)
        assert service["spec"]["clusterIP"] == "None"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (port,) = service["spec"]["ports"]
        assert port["targetPort"] == "grpc"
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert port["port"] == container["ports"][0]["containerPort"]


def test_endpoint_configmap_names_each_headless_service_with_dns_targets(
    rendered: list[Doc],
) -> None:
    targets = endpoints(rendered)
    assert sorted(targets) == sorted(d["metadata"]["name"] for d in model_deployments(rendered))
    for name, target in targets.items():
        match = DNS_TARGET.match(target)
        assert match, (
            f"{name}: {target} is not dns:///<service>.<namespace>.svc.cluster.local:<port>"
        )
        service = named(rendered, "Service", match["service"])
        assert service["metadata"]["namespace"] == match["namespace"]
        assert service["spec"]["clusterIP"] == "None"
        assert int(match["port"]) in [p["port"] for p in service["spec"]["ports"]]


def test_rayjob_reads_the_endpoint_list_and_writes_to_the_results_claim(
    rendered: list[Doc],
) -> None:
    job = rayjob(rendered)
    entrypoint = job["spec"]["entrypoint"].split()
    assert entrypoint[:2] == ["umlip", "run"]
    assert entrypoint[entrypoint.index("--endpoints") + 1] == "/etc/umlip/endpoints.json"
    assert entrypoint[entrypoint.index("--out") + 1] == "/results"
    assert "--ray-address" in entrypoint
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in head["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    assert volumes[mounts["/etc/umlip"]]["configMap"]["name"] == "umlip-endpoints"
    claim = volumes[mounts["/results"]]["persistentVolumeClaim"]["claimName"]
    named(rendered, "PersistentVolumeClaim", claim)
    for template in pod_templates(job):
        assert template["spec"]["containers"][0]["image"].startswith("umlip/orchestrator:")


def test_only_pods_of_the_namespace_reach_services_and_ray(rendered: list[Doc]) -> None:
    (policy,) = of_kind(rendered, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"] == {}  # every pod of the namespace: services and Ray
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [{"from": [{"podSelector": {}}]}]  # from this namespace only


def test_ray_processes_and_the_submitter_use_the_token_secret(rendered: list[Doc]) -> None:
    for template in pod_templates(rayjob(rendered)):
        for container in template["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
            secret = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert secret == {"name": "umlip-ray-token", "key": "token"}, container["name"]


def test_services_off_loopback_say_plaintext_is_intended(rendered: list[Doc]) -> None:
    """A service bound to 0.0.0.0 refuses plaintext unless told it is on a private
    network (the pod network behind the NetworkPolicy)."""
    for deployment in model_deployments(rendered):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["UMLIP_HOST"] == "0.0.0.0"
        assert env["UMLIP_ALLOW_PLAINTEXT"] == "1" or "UMLIP_TLS_CERT" in env
