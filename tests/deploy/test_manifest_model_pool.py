"""deploy/k8s, rendered per overlay: per-model worker pools (components/model-pool). A pool
is a worker Deployment whose own env pins MAAS_WORKER_MODELS; it scales on its model's queue
depth as the schedulers export it, its selectors and the generic worker's never take each
other's pods, and its pods are admitted, hardened and probed like the generic workers'.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from runtime import metrics
from tests.deploy.conftest import REPO, selects
from tests.deploy.test_manifests import SETTINGS, check_reads_the_schedulers_metrics

if TYPE_CHECKING:
    from conftest import Doc, Rendered

# KEDA's metrics-api reads a Prometheus series by a PromQL selector: name{label="value",...}.
SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:\s*\w+\s*=\s*"[^"]*"\s*,?)*)\}')
MATCHER = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
# Both fleets' pods share these (Redis admits part-of; the metrics policy takes component).
SHARED_LABELS = ("app.kubernetes.io/component", "app.kubernetes.io/part-of")


def _pod_labels(workload: Doc) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def _exported_by_scheduler(name: str) -> Any:
    """The runtime.metrics object of series `name`, if scheduler/ code sets it."""
    found = {m._name: attr for attr, m in vars(metrics).items()
             if any(m is x for x in metrics.ALL)}
    code = "\n".join(p.read_text() for p in (REPO / "scheduler").glob("*.py"))
    attr = found.get(name)
    assert attr and f"metrics.{attr}." in code, f"the schedulers export no {name}"
    return getattr(metrics, attr)


def test_an_overlay_renders_the_cnn_pool(rendered: Rendered) -> None:
    if rendered.overlay == "gpu-model-pool":
        assert [rendered.pinned_models(w) for w in rendered.model_pools()] == ["cnn"]


def test_a_pool_scales_on_its_models_queue_depth(rendered: Rendered) -> None:
    for pool in rendered.model_pools():
        name = pool["metadata"]["name"]
        where = f"{rendered.overlay}: {name}"
        (scaled,) = [s for s in rendered.of_kind("ScaledObject")
                     if s["spec"]["scaleTargetRef"]["name"] == name]
        spec = scaled["spec"]
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        check_reads_the_schedulers_metrics(rendered, meta)
        match = SELECTOR.fullmatch(meta["valueLocation"].strip())
        assert match, f"{where}: {meta['valueLocation']!r} is not name{{label=\"value\"}}"
        gauge = _exported_by_scheduler(match[1])
        assert gauge is metrics.QUEUE_DEPTH, f"{where}: scale on the queue depth"
        labels = dict(MATCHER.findall(match[2]))
        assert set(labels) == set(gauge._labelnames), f"{where}: {labels}"
        # One model per pool: KEDA takes the largest of several triggers, not their sum.
        settings = rendered.settings_of(pool)
        (model,) = settings.worker_model_pins
        assert labels["model"] == metrics.model_label(model), f"{where}: pins {model}"
        assert float(meta["targetValue"]) == settings.max_batch_size, (
            f"{where}: one worker per full batch of MAAS_MAX_BATCH_SIZE jobs")
        assert float(meta["activationTargetValue"]) == 0, "one waiting job wakes the pool"
        assert int(spec.get("minReplicaCount", 0)) >= 1
        assert int(spec["maxReplicaCount"]) >= int(spec["minReplicaCount"])
        assert spec["fallback"]["replicas"] >= 1, where


def test_selectors_never_take_another_fleets_pods(rendered: Rendered) -> None:
    """Each Deployment, StatefulSet, Service and PodDisruptionBudget selects the pods of one
    workload, and each Deployment has at most one autoscaler: a pool labelled like the generic
    worker would be counted, evicted and scaled as part of it."""
    owners = [*rendered.of_kind("Deployment"), *rendered.of_kind("StatefulSet")]
    for w in owners:
        assert rendered.selected(w["spec"]["selector"]["matchLabels"]) == [w], (
            f"{rendered.overlay}: {w['metadata']['name']}'s selector takes other pods")
    for kind in ("Service", "PodDisruptionBudget"):
        for obj in rendered.of_kind(kind):
            selector = obj["spec"]["selector"]
            if kind == "Service":
                selector = {"matchLabels": selector}
            taken = [w for w in owners if selects(selector, _pod_labels(w))]
            assert len(taken) == 1, f"{rendered.overlay}: {kind}/{obj['metadata']['name']}"
    targets = [a["spec"]["scaleTargetRef"]["name"] for kind in
               ("ScaledObject", "HorizontalPodAutoscaler") for a in rendered.of_kind(kind)]
    assert len(targets) == len(set(targets)), f"{rendered.overlay}: two autoscalers {targets}"
    for pool in rendered.model_pools():
        assert any(selects(p["spec"]["selector"], _pod_labels(pool))
                   for p in rendered.of_kind("PodDisruptionBudget")), (
            f"{rendered.overlay}: {pool['metadata']['name']} has no PodDisruptionBudget")


def _peers(policy: Doc) -> list[Doc]:
    return [peer for rule in policy["spec"].get("ingress", []) + policy["spec"].get(
        "egress", []) for peer in rule.get("from", []) + rule.get("to", [])
        if "podSelector" in peer and "namespaceSelector" not in peer]


def test_pools_are_admitted_like_the_generic_workers(rendered: Rendered) -> None:
    """Every NetworkPolicy that applies to the generic workers applies to each pool, and each
    peer rule that admits generic workers (to Redis, ...) admits the pool: a pool left out of
    one is unscraped, unreachable or cut off. Except the training peers (components/
    distributed-training) for a pool that trains nothing."""
    worker = _pod_labels(rendered.workload("worker"))
    for pool in rendered.model_pools():
        labels = _pod_labels(pool)
        where = f"{rendered.overlay}: {pool['metadata']['name']}"
        assert {k: labels.get(k) for k in SHARED_LABELS} == {k: worker[k] for k in
                                                              SHARED_LABELS}, where
        trains = rendered.settings_of(pool).training_slots > 0
        for policy in rendered.of_kind("NetworkPolicy"):
            name = policy["metadata"]["name"]
            selector = policy["spec"]["podSelector"]
            is_training_peers = selects(selector, worker) and any(
                selects(p["podSelector"], worker) for p in _peers(policy))
            if is_training_peers and not trains:
                continue
            assert selects(selector, labels) == selects(selector, worker), f"{where}: {name}"
            for peer in _peers(policy):
                assert selects(peer["podSelector"], labels) == selects(
                    peer["podSelector"], worker), f"{where}: a peer of {name}"


def test_pool_pods_run_like_the_generic_workers(rendered: Rendered) -> None:
    generic = rendered.workload("worker")["spec"]["template"]
    worker = rendered.container("worker")
    for pool in rendered.model_pools():
        where = f"{rendered.overlay}: {pool['metadata']['name']}"
        template = pool["spec"]["template"]
        pod = template["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == "worker"]
        for key in ("image", "command", "ports", "readinessProbe", "livenessProbe",
                    "securityContext", "volumeMounts", "envFrom"):
            assert container.get(key) == worker.get(key), f"{where}: {key}"
        assert pod["securityContext"] == generic["spec"]["securityContext"], where
        assert template["metadata"]["annotations"] == generic["metadata"]["annotations"]
        assert pod["terminationGracePeriodSeconds"] >= generic["spec"][
            "terminationGracePeriodSeconds"], f"{where}: a shorter drain"
        env = rendered.env(container)
        assert set(env) >= SETTINGS, f"{where}: lacks {sorted(SETTINGS - set(env))}"
        assert env["MAAS_REDIS_URL"] == rendered.env(worker)["MAAS_REDIS_URL"], where
        is_cuda = rendered.settings_of(pool).worker_device.startswith("cuda")
        gpus = container["resources"]["limits"].get("nvidia.com/gpu", 0)
        assert (gpus >= 1) == is_cuda, f"{where}: {gpus} GPUs for a device of the overlay"
        if is_cuda:
            assert pod.get("tolerations") == generic["spec"]["tolerations"], where
            assert pod.get("nodeSelector"), where


def test_the_general_fleet_leaves_pooled_models_to_their_pools(rendered: Rendered) -> None:
    """With pools, the generic workers serve every model but the pooled ones and the
    scheduler leaves the pooled models' jobs out of maas_workers_wanted (the generic fleet's
    signal): a cnn backlog grows the cnn pool alone, and each fleet counts only its jobs."""
    pooled = {name for pool in rendered.model_pools()
              for name in rendered.settings_of(pool).worker_model_pins}
    generic = rendered.settings("worker").worker_model_pins
    scheduler = set(rendered.settings("scheduler").pooled_model_names)
    if not pooled:
        assert generic == () and scheduler == set(), rendered.overlay
        return
    assert {p.removeprefix("!") for p in generic} == pooled, rendered.overlay
    assert all(p.startswith("!") for p in generic), rendered.overlay
    assert scheduler == pooled, rendered.overlay
