"""The Kubernetes manifests in deploy/k8s: valid against Kubernetes' schemas, and consistent with ascrm."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ascrm.core.rules import load_rules
from ascrm.service.settings import load_settings

K8S = Path(__file__).parent.parent / "deploy" / "k8s"
VERSION = "1.30.0"  # the oldest Kubernetes these manifests are checked against (kubernetes-validate bundles it)


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource kustomization.yaml applies, by (kind, name)."""
    return {
        (doc["kind"], doc["metadata"]["name"]): doc for name in kustomization()["resources"] for doc in documents(name)
    }


@pytest.mark.parametrize("name", sorted(path.name for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml"))
@pytest.mark.parametrize("version", [VERSION, kubernetes_validate.latest_version()])
def test_manifest_is_valid(name: str, version: str) -> None:
    for doc in documents(name):
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any schema violation


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "replicas"), "two"),  # wrong type
        (("spec", "template", "spec", "containers", 0, "livenessProbe", "periodSecond"), 10),  # unknown field
        (("spec", "template", "spec", "containers", 0, "securityContext", "capabilities", "drop"), "ALL"),  # not a list
    ],
)
def test_a_broken_manifest_is_rejected(path: tuple[Any, ...], value: Any) -> None:
    (deployment,) = documents("deployment.yaml")
    node = deployment
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(kustomization()["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present


def pod(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = objects["Deployment", "ascrm"]["spec"]["template"]["spec"]
    return spec


def test_deployment_runs_replicas_on_redis_with_rules_as_a_live_folder(tmp_path: Path) -> None:
    objects = resources()
    deployment = objects["Deployment", "ascrm"]
    assert deployment["spec"]["replicas"] >= 2
    spec = pod(objects)
    (container,) = spec["containers"]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert all("subPath" not in mount for mount in mounts.values())  # subPath mounts never see updates
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    config_map = objects["ConfigMap", volumes["config"]["configMap"]["name"]]
    config_path = Path(container["args"][container["args"].index("--config") + 1])
    assert config_path.parent == Path(mounts["config"]["mountPath"])
    # The config loads with exactly the variables the Deployment gives from the Secret.
    env = {item["name"]: "x" for item in container["env"]}
    (tmp_path / config_path.name).write_text(config_map["data"][config_path.name])
    settings = load_settings(tmp_path / config_path.name, env=env)
    assert settings.state.backend == "redis"
    assert settings.rules == Path(mounts["rules"]["mountPath"])
    assert "*" not in settings.listen.forwarded_allow_ips
    unused = set(env) - set(re.findall(r"\$\{(\w+)\}", config_map["data"][config_path.name]))
    assert not unused
    secret_keys = {item["valueFrom"]["secretKeyRef"]["key"] for item in container["env"]}
    (secret,) = documents("secret.example.yaml")
    assert set(secret["stringData"]) == secret_keys
    # The rules in their ConfigMap load and pass the strict check.
    rules_map = objects["ConfigMap", volumes["rules"]["configMap"]["name"]]
    for name, text in rules_map["data"].items():
        (tmp_path / "rules").mkdir(exist_ok=True)
        (tmp_path / "rules" / name).write_text(text)
    rules = load_rules(tmp_path / "rules", settings.timezone)
    assert rules.rules
    assert not rules.warnings


def test_probes_stop_and_security() -> None:
    objects = resources()
    spec = pod(objects)
    (container,) = spec["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"  # a bad rule edit never fails it
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "/bin/sleep"
    assert spec["terminationGracePeriodSeconds"] > int(sleep[1]) + 10  # drain, then up to 10 s of requests
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]


def test_service_budget_and_ingress_select_the_pods() -> None:
    objects = resources()
    labels = objects["Deployment", "ascrm"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        spec = objects[kind, "ascrm"]["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), kind
    assert objects["PodDisruptionBudget", "ascrm"]["spec"]["minAvailable"] == 1
    (rule,) = objects["Ingress", "ascrm"]["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"]["name"] == "ascrm"
    assert (
        objects["Ingress", "ascrm"]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "64k"
    )
    redis_url = yaml.safe_load(objects["ConfigMap", "ascrm-config"]["data"]["ascrm.yaml"])["state"]["redis_url"]
    assert "@ascrm-redis:6379/" in redis_url
    assert ("Service", "ascrm-redis") in objects
