"""The deploy tests, tested: each mistake below, made in a copy of deploy/k8s, must make at
least one check of tests/deploy fail on the rendered overlay. A mistake that every check lets
through is a hole in the tests (issue #20 lists the ones that once passed all of them).

The checks are every `test_*(rendered)` function of the manifest test modules, run on the
mutated rendering; a check that raises (an assertion, pytest.fail) has caught the mistake."""

from __future__ import annotations

import dataclasses
import inspect
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy import (
    test_manifest_model_pool,
    test_manifest_observability,
    test_manifest_production,
    test_manifest_redis_backup,
    test_manifest_redis_cluster,
    test_manifest_security,
    test_manifests,
    test_monitoring,
)
from tests.deploy.conftest import K8S, Rendered, render

CHECKS: list[Callable[[Rendered], None]] = [
    check for module in (test_manifests, test_manifest_production, test_manifest_security,
                         test_manifest_observability, test_monitoring,
                         test_manifest_redis_backup, test_manifest_model_pool,
                         test_manifest_redis_cluster)
    for name, check in vars(module).items()
    if name.startswith("test_") and callable(check)
    and list(inspect.signature(check).parameters) == ["rendered"]]


@dataclasses.dataclass(frozen=True)
class Mistake:
    name: str
    overlay: str
    path: str  # under deploy/k8s
    old: str
    new: str


MISTAKES = [
    # The ones issue #20 found passing every test.
    Mistake("the gpu overlay on the CPU image", "gpu", "overlays/gpu/kustomization.yaml",
            'newTag: "0.1.0-cu126"', 'newTag: "0.1.0"'),
    Mistake("worker PDB minAvailable 1", "gpu", "base/worker.yaml",
            "spec:\n  maxUnavailable: 1", "spec:\n  minAvailable: 1"),
    Mistake("worker liveness after 1 s", "cpu", "base/worker.yaml",
            "initialDelaySeconds: 30", "initialDelaySeconds: 1"),
    Mistake("KEDA active only from 50", "gpu", "components/keda/scaled-object.yaml",
            'activationTargetValue: "0"', 'activationTargetValue: "50"'),
    Mistake("maxReplicaCount 0", "gpu", "components/keda/scaled-object.yaml",
            "maxReplicaCount: 8", "maxReplicaCount: 0"),
    Mistake("a 16Mi gateway memory limit", "gpu", "base/gateway.yaml",
            "limits:\n              memory: 1Gi", "limits:\n              memory: 16Mi"),
    Mistake("maxmemory 1050mb under a 1Gi limit", "cpu", "base/redis.conf",
            "maxmemory 640mb", "maxmemory 1050mb"),
    # More of the same kind.
    Mistake("scale-to-zero by default", "gpu", "components/keda/scaled-object.yaml",
            "minReplicaCount: 1", "minReplicaCount: 0"),
    Mistake("KEDA reads a gauge nobody exports", "gpu", "components/keda/scaled-object.yaml",
            "valueLocation: maas_workers_wanted", "valueLocation: maas_worker_wanted"),
    Mistake("KEDA reads the schedulers' health port", "gpu",
            "components/keda/scheduler-metrics.yaml", "targetPort: metrics",
            "targetPort: health"),
    Mistake("RDB snapshots back on", "cpu", "base/redis.conf", 'save ""', "save 900 1"),
    Mistake("fsync once a second", "cpu", "base/redis.conf", "appendfsync always",
            "appendfsync everysec"),
    Mistake("eviction on", "cpu", "base/redis.conf", "maxmemory-policy noeviction",
            "maxmemory-policy allkeys-lru"),
    Mistake("a writable root filesystem", "cpu", "base/gateway.yaml",
            "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"),
    Mistake("replicas on the autoscaled gateway", "cpu", "base/gateway.yaml",
            "spec:\n  # No `replicas`", "spec:\n  replicas: 2\n  # No `replicas`"),
    Mistake("Redis open to every pod of every namespace", "cpu", "base/network-policy.yaml",
            "        - podSelector:\n            matchLabels:\n              "
            "app.kubernetes.io/part-of: maas\n      ports:\n        - port: 6379",
            "        - namespaceSelector: {}\n      ports:\n        - port: 6379"),
    Mistake("the backup sidecar reads another directory", "cpu-minio",
            "components/redis-backup/backup-sidecar.yaml", '"--data-dir", "/data"',
            '"--data-dir", "/var/lib/redis"'),
    # components/model-pool (the cnn pool of overlays/gpu-model-pool).
    Mistake("pool pods labelled as the generic workers", "gpu-model-pool",
            "components/model-pool/worker-pool.yaml",
            "      labels:\n        app.kubernetes.io/name: maas-worker-cnn",
            "      labels:\n        app.kubernetes.io/name: maas-worker"),
    Mistake("the pool's selector takes the generic workers", "gpu-model-pool",
            "components/model-pool/worker-pool.yaml",
            "    matchLabels:\n      app.kubernetes.io/name: maas-worker-cnn\n  strategy",
            "    matchLabels:\n      app.kubernetes.io/component: worker\n  strategy"),
    Mistake("the pool's ScaledObject scales the generic workers", "gpu-model-pool",
            "components/model-pool/scaled-object.yaml",
            "scaleTargetRef:\n    name: maas-worker-cnn", "scaleTargetRef:\n    name: maas-worker"),
    Mistake("the pool reads a metric nobody exports", "gpu-model-pool",
            "components/model-pool/scaled-object.yaml",
            "valueLocation: 'maas_queue_depth{", "valueLocation: 'maas_queue_length{"),
    Mistake("the pool reads a label the gauge lacks", "gpu-model-pool",
            "components/model-pool/scaled-object.yaml", 'depth{model="cnn"}\'',
            'depth{name="cnn"}\''),
    Mistake("the pool reads another model's queue", "gpu-model-pool",
            "components/model-pool/scaled-object.yaml", 'depth{model="cnn"}\'',
            'depth{model="mlp"}\''),
    Mistake("a pool worker per queued job", "gpu-model-pool",
            "components/model-pool/scaled-object.yaml", 'targetValue: "32"', 'targetValue: "1"'),
    Mistake("the pool out of the workers' NetworkPolicy", "gpu-model-pool",
            "components/model-pool/worker-pool.yaml",
            "        app.kubernetes.io/component: worker\n        app.kubernetes.io/part-of",
            "        app.kubernetes.io/component: worker-pool\n        app.kubernetes.io/part-of"),
    Mistake("replicas on the autoscaled pool", "gpu-model-pool",
            "components/model-pool/worker-pool.yaml",
            "spec:\n  # No `replicas`", "spec:\n  replicas: 2\n  # No `replicas`"),
    Mistake("the pool on an untagged image", "gpu-model-pool",
            "overlays/gpu-model-pool/kustomization.yaml",
            'images:\n  - name: maas-worker\n    newTag: "0.1.0-cu126"\n', ""),
    Mistake("the pool's pods without a GPU", "gpu-model-pool",
            "overlays/gpu-model-pool/pool-gpu.yaml", "nvidia.com/gpu: 1\n", ""),
    # components/redis-cluster (overlays/cpu-redis-cluster).
    Mistake("the cluster bus on the wrong port", "cpu-redis-cluster",
            "components/redis-cluster/network-policy.yaml", "port: 16379", "port: 16380"),
    Mistake("the cluster bus open to every maas pod", "cpu-redis-cluster",
            "components/redis-cluster/network-policy.yaml",
            "app.kubernetes.io/name: maas-redis-cluster\n      ports",
            "app.kubernetes.io/part-of: maas\n      ports"),
    Mistake("a client URL without the last node", "cpu-redis-cluster",
            "components/redis-cluster/redis-url.yaml",
            ",maas-redis-cluster-5.maas-redis-cluster:6379", ""),
    Mistake("five cluster nodes", "cpu-redis-cluster",
            "components/redis-cluster/redis-cluster.yaml", "replicas: 6", "replicas: 5"),
    Mistake("primaries without replicas", "cpu-redis-cluster",
            "components/redis-cluster/cluster-create-job.yaml", "--cluster-replicas 1",
            "--cluster-replicas 0"),
    Mistake("submits wait for more replicas than exist", "cpu-redis-cluster",
            "components/redis-cluster/kustomization.yaml", "MAAS_REDIS_WAIT_REPLICAS=1",
            "MAAS_REDIS_WAIT_REPLICAS=2"),
    Mistake("a single Redis waiting for a replica", "cpu", "base/maas.env",
            "MAAS_REDIS_WAIT_REPLICAS=0", "MAAS_REDIS_WAIT_REPLICAS=1"),
    Mistake("RDB snapshots on the cluster", "cpu-redis-cluster",
            "components/redis-cluster/redis.conf", 'save ""', "save 900 1"),
    Mistake("cluster maxmemory 1050mb under a 1Gi limit", "cpu-redis-cluster",
            "components/redis-cluster/redis.conf", "maxmemory 640mb", "maxmemory 1050mb"),
    Mistake("cluster eviction on", "cpu-redis-cluster", "components/redis-cluster/redis.conf",
            "maxmemory-policy noeviction", "maxmemory-policy allkeys-lru"),
    Mistake("clients redirected to pod IPs", "cpu-redis-cluster",
            "components/redis-cluster/redis.conf", "cluster-preferred-endpoint-type hostname",
            "cluster-preferred-endpoint-type ip"),
    Mistake("replicas without the password", "cpu-redis-cluster",
            "components/redis-cluster/redis-cluster.yaml", '"--masterauth", "$(REDIS_PASSWORD)",',
            ""),
    Mistake("cluster nodes started one by one", "cpu-redis-cluster",
            "components/redis-cluster/redis-cluster.yaml", "podManagementPolicy: Parallel",
            "podManagementPolicy: OrderedReady"),
]


def mutated(tmp_path: Path, mistake: Mistake | None) -> Rendered:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    if mistake is not None:
        path = copy / mistake.path
        text = path.read_text()
        assert text.count(mistake.old) == 1, f"{mistake.name}: {mistake.old!r} not found once"
        path.write_text(text.replace(mistake.old, mistake.new))
    overlay = mistake.overlay if mistake else "gpu"
    return Rendered(overlay, render(copy / "overlays" / overlay))


def failures(rendered: Rendered) -> list[str]:
    failed = []
    for check in CHECKS:
        try:
            check(rendered)
        except (Exception, pytest.fail.Exception) as exc:  # caught the mistake
            failed.append(f"{check.__name__}: {type(exc).__name__}")
    return failed


def test_an_unchanged_copy_passes_every_check(tmp_path: Path) -> None:
    assert len(CHECKS) > 20
    assert failures(mutated(tmp_path, None)) == []


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_every_mistake_fails_a_check(mistake: Mistake, tmp_path: Path) -> None:
    assert failures(mutated(tmp_path, mistake)), f"no check catches: {mistake.name}"

