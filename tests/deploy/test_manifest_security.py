"""deploy/k8s, rendered per overlay: pod hardening, network policy, secrets, Redis durability,
and that every selector and reference points at something that is rendered.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tests.deploy.conftest import selects

if TYPE_CHECKING:
    from conftest import Doc, Rendered

PART_OF = {"app.kubernetes.io/part-of": "maas"}
REDIS_SECRET = {"name": "maas-redis", "key": "password"}
# components/object-storage and components/minio: the bucket's credentials (created by hand).
OBJECT_STORE_SECRET = "maas-object-store"
OBJECT_STORE_KEYS = {"access-key", "secret-key", "endpoint", "region"}
# Kubernetes' Quantity grammar (resource.Quantity); the schemas accept any string.
QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[munk])?$")
# As Redis reads them (memtoull): `kb`/`mb`/`gb` are powers of 1024, `k`/`m`/`g` of 1000.
# The headroom under the limit is checked in test_manifest_production.py.
REDIS_UNITS = {"": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3,
               "k": 1000, "m": 1000**2, "g": 1000**3}


def _quantity_bytes(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return float(q.removesuffix(suffix)) * factor
    return float(q)


def test_every_container_is_locked_down(rendered: Rendered) -> None:
    for where, pod, container in rendered.containers():
        sc = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert sc.get("runAsNonRoot") is True, where
        assert sc.get("runAsUser", 1) != 0, where
        assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("capabilities") == {"drop": ["ALL"]}, where
        assert not sc.get("privileged"), where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp not an emptyDir"
        for kind in ("limits", "requests"):
            for name, q in container.get("resources", {}).get(kind, {}).items():
                assert QUANTITY.match(str(q)), f"{where}: {kind}.{name}={q!r}"
        assert "memory" in container["resources"]["limits"], where


def test_pods_get_no_api_token_and_no_service_links(rendered: Rendered) -> None:
    for w in rendered.workloads():
        pod = w["spec"]["template"]["spec"]
        where = f"{rendered.overlay}: {w['metadata']['name']}"
        assert pod.get("automountServiceAccountToken") is False, where
        # Service links put MAAS_GATEWAY_PORT=tcp://10.x.x.x:50051 (from Service
        # maas-gateway) into every pod: a settings name with a value that crashes the start.
        assert pod.get("enableServiceLinks") is False, where


def test_every_selector_selects_a_pod(rendered: Rendered) -> None:
    for w in rendered.workloads():
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert PART_OF.items() <= labels.items(), w["metadata"]["name"]  # Redis admits these
        if w["kind"] != "Job":  # a Job's selector is generated
            assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in rendered.workloads()]
    for kind, path in (("Service", ("selector",)),
                       ("PodDisruptionBudget", ("selector",)),
                       ("NetworkPolicy", ("podSelector",))):
        for obj in rendered.of_kind(kind):
            selector = obj["spec"]
            for key in path:
                selector = selector.get(key, {})
            if kind == "NetworkPolicy" and selector == {}:
                continue  # the default deny: every pod
            if kind == "Service":
                selector = {"matchLabels": selector}
            assert any(selects(selector, labels) for labels in pods), (
                f"{rendered.overlay}: {kind}/{obj['metadata']['name']} selects no pod")
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        rendered.get(ref["kind"], ref["name"])


def test_every_reference_resolves_and_no_secret_is_committed(rendered: Rendered) -> None:
    for where, pod, container in rendered.containers():
        for source in container.get("envFrom", []):
            assert set(source) == {"configMapRef"}, where
            rendered.get("ConfigMap", source["configMapRef"]["name"])
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            assert ref is None or ref == REDIS_SECRET or (
                ref["name"] == OBJECT_STORE_SECRET and ref["key"] in OBJECT_STORE_KEYS), (
                f"{where}: {ref}")
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                rendered.get("ConfigMap", volume["configMap"]["name"])
            if "persistentVolumeClaim" in volume:
                rendered.get("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert rendered.of_kind("Secret") == [], "no credential is committed: create the Secret"


def _ingress_rules(rendered: Rendered, pod_labels: dict[str, str]) -> list[Doc]:
    return [rule for p in rendered.of_kind("NetworkPolicy")
            if selects(p["spec"]["podSelector"], pod_labels)
            for rule in p["spec"].get("ingress", [])]


def test_network_policies_deny_by_default(rendered: Rendered) -> None:
    (deny,) = [p for p in rendered.of_kind("NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and not deny["spec"].get("ingress")
    port = rendered.settings("gateway").gateway_port
    # Prometheus (namespace `monitoring`) may scrape every maas process on its metrics port.
    metrics = {"from": [{"namespaceSelector": {"matchLabels": {
                   "kubernetes.io/metadata.name": "monitoring"}}}],
               "ports": [{"port": rendered.settings("gateway").metrics_port, "protocol": "TCP"}]}
    gateway = rendered.workload("gateway")["spec"]["template"]["metadata"]["labels"]
    assert _ingress_rules(rendered, gateway) == [{"ports": [{"port": port, "protocol": "TCP"}]},
                                                 metrics]
    queue = rendered.workload("queue")
    redis = queue["spec"]["template"]["metadata"]["labels"]
    redis_rules = [{
        "from": [{"podSelector": {"matchLabels": PART_OF}}],
        "ports": [{"port": 6379, "protocol": "TCP"}]}]
    if ["cluster-enabled", "yes"] in rendered.redis_conf():  # the nodes' bus: port + 10000
        redis_rules.append({
            "from": [{"podSelector": {"matchLabels": queue["spec"]["selector"]["matchLabels"]}}],
            "ports": [{"port": 6379 + 10000, "protocol": "TCP"}]})
    if any(p["metadata"]["name"] == "maas-redis-metrics"  # components/monitoring's exporter
           for p in rendered.of_kind("NetworkPolicy")):
        redis_rules.append({**metrics, "ports": [{"port": 9121, "protocol": "TCP"}]})
    assert _ingress_rules(rendered, redis) == redis_rules
    keda = {"from": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "keda"}}}],
            "ports": [{"port": rendered.settings("scheduler").metrics_port, "protocol": "TCP"}]}
    autoscaled = bool(rendered.of_kind("ScaledObject"))  # KEDA reads maas_workers_wanted
    for role in ("scheduler", "worker"):
        labels = rendered.workload(role)["spec"]["template"]["metadata"]["labels"]
        expected = [metrics, keda] if role == "scheduler" and autoscaled else [metrics]
        assert _ingress_rules(rendered, labels) == expected, f"{role}: only scrapes"


def test_redis_is_durable_and_never_evicts(rendered: Rendered) -> None:
    redis = rendered.workload("queue")  # one Redis, or a Redis Cluster's nodes
    pod = redis["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "redis"]
    assert container["image"].startswith("redis:7.2") and "bitnami" not in container["image"]
    (config_volume,) = [v for v in pod["volumes"] if "configMap" in v]
    (conf,) = rendered.get("ConfigMap", config_volume["configMap"]["name"])["data"].values()
    lines = {ln.strip() for ln in conf.splitlines() if ln.strip() and not ln.startswith("#")}
    assert {"appendonly yes", "appendfsync always", "maxmemory-policy noeviction",
            "dir /data"} <= lines
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    templates = {t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]}
    assert mounts["/data"] in templates, "the AOF lives on the PersistentVolume"
    (maxmemory,) = [ln.split()[1].lower() for ln in lines if ln.startswith("maxmemory ")]
    number = maxmemory.rstrip("kmgib")
    assert int(number) * REDIS_UNITS[maxmemory.removeprefix(number)] < _quantity_bytes(
        container["resources"]["limits"]["memory"]), "maxmemory must sit below the limit"
    assert "--requirepass" in container["args"]
    password = container["args"][container["args"].index("--requirepass") + 1]
    assert password == "$(REDIS_PASSWORD)"
    assert {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": REDIS_SECRET}} in (
        container["env"])


def test_minio_admits_only_maas_pods(rendered: Rendered) -> None:
    minio = [s for s in rendered.of_kind("StatefulSet") if s["metadata"]["name"] == "maas-minio"]
    for server in minio:
        labels = server["spec"]["template"]["metadata"]["labels"]
        assert _ingress_rules(rendered, labels) == [{
            "from": [{"podSelector": {"matchLabels": PART_OF}}],
            "ports": [{"port": 9000, "protocol": "TCP"}]}]
