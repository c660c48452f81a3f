"""deploy/k8s, rendered per overlay: what production needs beyond a valid manifest.
Autoscalers own the replica count of their targets, Redis keeps memory headroom and never
stops writes on a failed snapshot, Redis is the last maas pod preempted and runs a pinned
image, and disruption budgets and liveness probes do not fight the workloads they guard.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Doc, Rendered

# maxmemory counts the dataset only; the AOF-rewrite fork's copy-on-write pages, client and
# AOF buffers and fragmentation need the rest of the container's memory limit.
REDIS_MAXMEMORY_FRACTION = 0.65
# Redis's memory units (memtoull in util.c), case-insensitive: `k`/`m`/`g` are powers of
# 1000, `kb`/`mb`/`gb` powers of 1024; a bare number is bytes.
REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2,
               "g": 1000**3, "gb": 1024**3}
# Kubernetes' Quantity suffixes (resource.Quantity): binary Ki..Ei, decimal k..E, m = milli.
QUANTITY_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
                  "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
                  "Ei": 2**60}
QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+)|([KMGTPE]i|[mkMGTPE])?)")
# Highest value a user PriorityClass may have (above it: system-* classes only).
MAX_USER_PRIORITY = 1_000_000_000
PINNED_IMAGE = re.compile(r"^[^:@]+:\d+\.\d+\.\d+(-[\w.]+)?(@sha256:[0-9a-f]{64})?$")


def redis_bytes(value: str) -> int:
    """A Redis memory setting in bytes, read as Redis reads it."""
    match = re.fullmatch(r"(\d+)([a-z]*)", value.strip().lower())
    assert match and match[2] in REDIS_UNITS, f"not a Redis memory value: {value!r}"
    return int(match[1]) * REDIS_UNITS[match[2]]


def quantity_bytes(value: str) -> float:
    """A Kubernetes memory Quantity in bytes."""
    match = QUANTITY.fullmatch(str(value))
    assert match, f"not a Kubernetes quantity: {value!r}"
    number, exponent, suffix = match.groups()
    return float(number) * (10 ** int(exponent) if exponent else QUANTITY_UNITS[suffix or ""])


@pytest.mark.parametrize(("value", "expected"), [
    ("1mb", 2**20), ("1m", 10**6), ("640MB", 640 * 2**20), ("1gb", 2**30), ("1g", 10**9),
    ("1kb", 1024), ("1k", 1000), ("123", 123), ("0", 0)])
def test_redis_units_are_read_as_redis_reads_them(value: str, expected: int) -> None:
    assert redis_bytes(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("1Gi", 2**30), ("1G", 1e9), ("512Mi", 512 * 2**20), ("512M", 512e6), ("1536Ki", 1536 * 1024),
    ("1k", 1000), ("1e9", 1e9), ("1073741824", 2**30), ("1.5Gi", 1.5 * 2**30)])
def test_kubernetes_quantities_are_read_as_kubernetes_reads_them(value: str,
                                                                 expected: float) -> None:
    assert quantity_bytes(value) == expected


def _autoscaled(rendered: Rendered) -> dict[str, int]:
    """Deployments an HPA or a KEDA ScaledObject targets, with their lowest replica count."""
    targets: dict[str, int] = {}
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] == "Deployment":
            targets[ref["name"]] = int(hpa["spec"].get("minReplicas", 1))
    for scaled in rendered.of_kind("ScaledObject"):
        ref = scaled["spec"]["scaleTargetRef"]
        if ref.get("kind", "Deployment") == "Deployment":
            targets[ref["name"]] = int(scaled["spec"].get("minReplicaCount", 0))
    return targets


def test_autoscaled_deployments_set_no_replicas(rendered: Rendered) -> None:
    targets = _autoscaled(rendered)
    assert "maas-gateway" in targets, f"{rendered.overlay}: the gateway's HPA is missing"
    for name in targets:
        spec = rendered.get("Deployment", name)["spec"]
        assert "replicas" not in spec, (
            f"{rendered.overlay}: Deployment/{name} is autoscaled; spec.replicas="
            f"{spec['replicas']} would reset the autoscaler's count on every apply")


def _redis(rendered: Rendered) -> tuple[Doc, Doc]:
    """The Redis pod spec and its `redis` container (one Redis, or a Redis Cluster's nodes)."""
    pod = rendered.workload("queue")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "redis"]
    return pod, container


def test_redis_writes_only_the_aof_and_keeps_memory_headroom(rendered: Rendered) -> None:
    _, container = _redis(rendered)
    conf = rendered.redis_conf()
    saves = [args for name, *args in conf if name == "save"]
    assert saves == [['""']], (f"{rendered.overlay}: redis.conf needs exactly `save \"\"` (AOF "
                               "only): a failed BGSAVE would stop every write")
    assert ["appendonly", "yes"] in conf
    (maxmemory,) = [args for name, *args in conf if name == "maxmemory"]
    limit = container["resources"]["limits"]["memory"]
    assert redis_bytes(maxmemory[0]) <= REDIS_MAXMEMORY_FRACTION * quantity_bytes(limit), (
        f"{rendered.overlay}: maxmemory {maxmemory[0]} is over {REDIS_MAXMEMORY_FRACTION:.0%} "
        f"of the {limit} limit: no room left for the AOF rewrite's fork and buffers")
    assert container["resources"]["requests"]["memory"] == limit, "no overcommitted Redis"


def test_redis_is_the_last_maas_pod_preempted(rendered: Rendered) -> None:
    classes = {c["metadata"]["name"]: c for c in rendered.of_kind("PriorityClass")}
    for c in classes.values():
        assert 0 < c["value"] < MAX_USER_PRIORITY and not c.get("globalDefault", False)
    pod, _ = _redis(rendered)
    name = pod.get("priorityClassName")
    assert name in classes, f"{rendered.overlay}: Redis needs a rendered PriorityClass"
    for w in rendered.workloads():
        other = w["spec"]["template"]["spec"].get("priorityClassName")
        assert other is None or other in classes, f"{w['metadata']['name']}: {other} missing"
        if w is not rendered.workload("queue"):
            value = classes[other]["value"] if other else 0
            assert value < classes[name]["value"], w["metadata"]["name"]
    scheduler = rendered.workload("scheduler")["spec"]["template"]["spec"]
    assert scheduler.get("priorityClassName") in classes, "the lease reaper outranks workers"


def test_redis_image_is_pinned_to_a_patch_version(rendered: Rendered) -> None:
    _, container = _redis(rendered)
    assert PINNED_IMAGE.match(container["image"]), (
        f"{rendered.overlay}: {container['image']}: pin redis to a full version (x.y.z), "
        "and to a digest in a release overlay")


def _min_replicas(rendered: Rendered, workload: Doc) -> int:
    name = workload["metadata"]["name"]
    if workload["kind"] == "Deployment" and name in (targets := _autoscaled(rendered)):
        return targets[name]
    return int(workload["spec"].get("replicas", 1))


def test_disruption_budgets_never_block_a_drain(rendered: Rendered) -> None:
    """A PDB whose minAvailable reaches the workload's lowest replica count blocks every
    node drain (a worker scaled to 0 by KEDA, or to 1, with `minAvailable: 1`)."""
    for pdb in rendered.of_kind("PodDisruptionBudget"):
        spec = pdb["spec"]
        (workload,) = rendered.selected(spec["selector"]["matchLabels"])
        where = f"{rendered.overlay}: PodDisruptionBudget/{pdb['metadata']['name']}"
        if "maxUnavailable" in spec:
            assert spec["maxUnavailable"] not in (0, "0", "0%"), where
            continue
        available = spec["minAvailable"]
        assert isinstance(available, int), f"{where}: use an integer or maxUnavailable"
        assert available < _min_replicas(rendered, workload), (
            f"{where}: minAvailable {available} with as few as "
            f"{_min_replicas(rendered, workload)} replicas blocks node drains")


def test_worker_liveness_waits_for_torch_to_import(rendered: Rendered) -> None:
    worker = rendered.container("worker")
    if "startupProbe" in worker:
        probe = worker["startupProbe"]
        budget_s = probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10)
    else:
        probe = worker["livenessProbe"]
        budget_s = probe.get("initialDelaySeconds", 0) + (
            probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10))
    assert budget_s >= 45, (f"{rendered.overlay}: a worker importing torch/CUDA gets {budget_s}"
                            " s before its liveness probe may restart it")
    liveness = worker["livenessProbe"]
    assert liveness.get("timeoutSeconds", 1) < liveness.get("periodSeconds", 10)


CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "StorageClass"}


def test_every_namespaced_object_lands_in_the_namespace(rendered: Rendered) -> None:
    """A component added at overlay level gets no namespace unless the overlay sets it again:
    its objects would land in whatever namespace kubectl uses."""
    for doc in rendered.docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            where = f"{rendered.overlay}: {doc['kind']}/{doc['metadata']['name']}"
            assert doc["metadata"].get("namespace") == rendered.namespace, where


# Idle RSS of each process, measured with `ps` on the processes of a tests/conftest.py cluster
# on CPU: gateway ~80 MiB, scheduler ~75 MiB, worker ~380 MiB (torch imported, no model).
IDLE_MIB = {"gateway": 80, "scheduler": 75, "worker": 380}


def test_memory_limits_hold_a_working_process(rendered: Rendered) -> None:
    """Twice the idle RSS, and for the gateway two messages of MAAS_MAX_MESSAGE_BYTES on top
    (a request as it arrives and its copy in the job): a lower limit OOM-kills the pod under
    its first large request (a 16Mi gateway passed every test once)."""
    for role, idle_mib in IDLE_MIB.items():
        container = rendered.container(role)
        resources = container["resources"]
        limit = quantity_bytes(resources["limits"]["memory"])
        need = 2 * idle_mib * 2**20
        if role == "gateway":
            need += 2 * rendered.settings(role).max_message_bytes
        assert limit >= need, (f"{rendered.overlay}: {role} memory limit "
                               f"{resources['limits']['memory']} < {need / 2**20:.0f} MiB")
        assert quantity_bytes(resources["requests"]["memory"]) <= limit, role


def test_a_cuda_worker_runs_a_cuda_image(rendered: Rendered) -> None:
    """MAAS_WORKER_DEVICE=cuda:N needs a worker image built from a CUDA torch index (tag
    suffix -cuNNN, README release steps) and a GPU in the pod's limits."""
    worker = rendered.container("worker")
    if not rendered.settings("worker").worker_device.startswith("cuda"):
        return
    tag = worker["image"].rsplit(":", 1)[-1]
    assert re.search(r"-cu\d+", tag), f"{rendered.overlay}: cuda worker on image {worker['image']}"
    assert int(worker["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1
