"""deploy/k8s/components/monitoring, rendered in every overlay that includes it: each alert
reads only metrics that something exports, each PodMonitor scrapes a port that rendered pods
declare, and the Redis exporter sidecar is locked down like every other container.

No schema for monitoring.coreos.com is available offline (kubernetes-validate knows built-in
kinds only; the operator's CRDs are not in this repository), so the shape of PodMonitor and
PrometheusRule is checked here by hand: required fields, and known keys only where a typo
would silently do nothing.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING

from conftest import K8S, REPO, Rendered, render
from prometheus_client.metrics import MetricWrapperBase

from runtime import metrics

if TYPE_CHECKING:
    from conftest import Doc

MONITORING = "monitoring.coreos.com/v1"
OVERLAY = "cpu-monitoring"
# Metrics of other exporters that the rules may read, by exporter (pin the versions below).
EXTERNAL = {
    # oliver006/redis_exporter (the sidecar's image tag pins it).
    "redis_exporter": {"redis_up", "redis_memory_used_bytes", "redis_memory_max_bytes"},
    # KEDA operator >= 2.14 (tests/deploy pins cloudcoil-models-keda 2.16).
    "keda": {"keda_scaled_object_errors_total", "keda_scaler_detail_errors_total"},
    # Prometheus itself, for every target it scrapes.
    "prometheus": {"up"},
}
ALLOWED = metrics.exposed_names() | set().union(*EXTERNAL.values())
# PromQL words that are not metric names; label lists after these are dropped first.
LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
IDENT = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")  # not inside 1e3 or 0.5
# The CRD's pattern for `for` (monitoring.coreos.com/v1 Duration).
DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
GROUP_KEYS = {"name", "interval", "rules", "limit", "partial_response_strategy",
              "query_offset", "labels"}
ENDPOINT_KEYS = {"port", "portNumber", "targetPort", "path", "scheme", "interval",
                 "scrapeTimeout", "honorLabels", "honorTimestamps", "relabelings",
                 "metricRelabelings", "params", "enableHttp2", "followRedirects",
                 "filterRunning", "tlsConfig", "basicAuth", "authorization", "oauth2",
                 "bearerTokenSecret", "proxyUrl"}
SEVERITIES = {"info", "warning", "critical"}
ALERTS = {"MaasQueueAgeHigh", "MaasNoLiveWorker", "MaasWorkersWantedUnmet",
          "MaasDeadLettersGrowing", "MaasWorkerLostLeases", "MaasRedisMemoryNearMax",
          "MaasKedaScalerErrors"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values, strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # matchers and ranges
    expr = LABEL_LISTS.sub(" ", expr)
    expr = re.sub(r"\boffset\s+-?\w+", " ", expr)  # offset 1h
    names = set()
    for match in IDENT.finditer(expr):
        is_call = re.match(r"\s*\(", expr[match.end():])
        if not is_call and match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


def unknown_metrics(rules: list[Doc]) -> list[str]:
    """`<rule>: <metric>` for every metric a rule reads that nothing exports."""
    return [f"{rule.get('alert') or rule.get('record')}: {name}"
            for doc in rules for group in doc["spec"]["groups"] for rule in group["rules"]
            for name in sorted(metric_names(rule["expr"]) - ALLOWED)]


def _monitoring(rendered: Rendered, kind: str) -> list[Doc]:
    return [d for d in rendered.of_kind(kind) if d["apiVersion"] == MONITORING]


def test_the_monitoring_overlay_renders_the_component() -> None:
    rendered = Rendered(OVERLAY, render(K8S / "overlays" / OVERLAY))
    monitors = {d["metadata"]["name"] for d in _monitoring(rendered, "PodMonitor")}
    assert monitors == {"maas-gateway", "maas-scheduler", "maas-worker", "maas-redis"}
    (rule,) = _monitoring(rendered, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == ALERTS


def test_maas_metrics_are_all_in_runtime_metrics() -> None:
    """scheduler/stats.py exports through runtime/metrics.py; a metric defined anywhere else
    would be missing from `exposed_names()`, so the rules' check would be wrong."""
    for path in (REPO / "scheduler" / "stats.py", REPO / "runtime" / "metrics.py"):
        calls = {n.func.id for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        defines = calls & {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
        assert not defines or path.name == "metrics.py", f"{path}: defines {defines}"
    assert {"maas_worker_lost_leases_total", "maas_queue_depth",
            "maas_dead_letters_total"} <= metrics.exposed_names()
    # ... and `metrics.ALL` lists every metric the module defines (a new one left out of it
    # would make a rule reading it look misspelt, or a misspelt one look exported).
    defined = {id(v) for v in vars(metrics).values()
               if isinstance(v, MetricWrapperBase)}
    assert defined == {id(m) for m in metrics.ALL}


def test_every_rule_reads_exported_metrics(rendered: Rendered) -> None:
    rules = _monitoring(rendered, "PrometheusRule")
    assert unknown_metrics(rules) == [], rendered.overlay
    for doc in rules:
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                assert metric_names(rule["expr"]), f"{rule['alert']}: reads no metric"


def test_a_misspelt_metric_fails_the_check() -> None:
    rendered = Rendered(OVERLAY, render(K8S / "overlays" / OVERLAY))
    for misspelt in ("maas_dead_letter_total", "redis_memory_max_byte", "keda_scaler_errors"):
        rules = copy.deepcopy(_monitoring(rendered, "PrometheusRule"))
        rule = rules[0]["spec"]["groups"][0]["rules"][0]
        rule["expr"] = f"sum by (model) (rate({misspelt}[5m])) > 0"
        assert unknown_metrics(rules) == [f"{rule['alert']}: {misspelt}"]
    assert metric_names('a_b{x="y"} / on (pod) group_left(z) rate(c[5m] offset 1h) > bool 1e3'
                        ) == {"a_b", "c"}


def test_rules_have_the_shape_the_operator_accepts(rendered: Rendered) -> None:
    for doc in _monitoring(rendered, "PrometheusRule"):
        assert set(doc["spec"]) == {"groups"}, doc["metadata"]["name"]
        names = [g["name"] for g in doc["spec"]["groups"]]
        assert len(set(names)) == len(names)
        for group in doc["spec"]["groups"]:
            assert set(group) <= GROUP_KEYS and group["rules"], group["name"]
            for rule in group["rules"]:
                where = f"{rendered.overlay}: {rule.get('alert')}"
                assert set(rule) <= RULE_KEYS and "expr" in rule and "alert" in rule, where
                assert DURATION.match(rule["for"]) and rule["for"] != "0", where
                assert rule["labels"]["severity"] in SEVERITIES, where
                assert {"summary", "description"} <= set(rule["annotations"]), where
                expr = rule["expr"]
                assert expr.count("(") == expr.count(")"), where
                assert expr.count("{") == expr.count("}"), where


def _declared_ports(pod: Doc) -> set[str]:
    return {p["name"] for c in pod.get("initContainers", []) + pod["containers"]
            for p in c.get("ports", []) if "name" in p}


def test_every_pod_monitor_scrapes_a_declared_port(rendered: Rendered) -> None:
    for monitor in _monitoring(rendered, "PodMonitor"):
        where = f"{rendered.overlay}: PodMonitor/{monitor['metadata']['name']}"
        spec = monitor["spec"]
        assert monitor["metadata"]["namespace"] == rendered.namespace, where
        assert "namespaceSelector" not in spec, f"{where}: scrapes its own namespace only"
        assert set(spec["selector"]) == {"matchLabels"}, where
        selected = rendered.selected(spec["selector"]["matchLabels"])
        assert selected, f"{where}: selects no pod"
        assert spec["podMetricsEndpoints"], where
        for endpoint in spec["podMetricsEndpoints"]:
            assert set(endpoint) <= ENDPOINT_KEYS, where
            for workload in selected:
                pod = workload["spec"]["template"]["spec"]
                assert endpoint["port"] in _declared_ports(pod), (
                    f"{where}: {workload['metadata']['name']} has no port {endpoint['port']}")
        if "jobLabel" in spec:
            assert all(spec["jobLabel"] in w["spec"]["template"]["metadata"]["labels"]
                       for w in selected), where


def test_the_redis_exporter_is_a_pinned_native_sidecar(rendered: Rendered) -> None:
    if not _monitoring(rendered, "PodMonitor"):
        return  # the overlay does not include components/monitoring
    pod = rendered.get("StatefulSet", "maas-redis")["spec"]["template"]["spec"]
    (exporter,) = [c for c in pod.get("initContainers", []) if c["name"] == "redis-exporter"]
    name, _, tag = exporter["image"].rpartition(":")
    assert name == "oliver006/redis_exporter" and re.fullmatch(r"v\d+\.\d+\.\d+", tag)
    assert exporter["restartPolicy"] == "Always", "a native sidecar (Kubernetes >= 1.29)"
    assert "readinessProbe" not in exporter, "its readiness would gate Redis' Service"
    env = {v["name"]: v for v in exporter["env"]}
    assert env["REDIS_ADDR"]["value"] == "redis://127.0.0.1:6379"
    assert env["REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "maas-redis", "key": "password"}}
    (port,) = exporter["ports"]
    policies = [p for p in rendered.of_kind("NetworkPolicy")
                if p["metadata"]["name"] == "maas-redis-metrics"]
    assert [r["ports"] for p in policies for r in p["spec"]["ingress"]] == [
        [{"port": port["containerPort"], "protocol": "TCP"}]]


def test_the_component_is_only_added_by_overlays_that_name_it() -> None:
    including = {p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml")
                 if "components/monitoring" in Path(p).read_text()}
    assert OVERLAY in including
