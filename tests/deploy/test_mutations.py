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
    test_manifest_observability,
    test_manifest_production,
    test_manifest_redis_backup,
    test_manifest_security,
    test_manifests,
    test_monitoring,
)
from tests.deploy.conftest import K8S, Rendered, render

CHECKS: list[Callable[[Rendered], None]] = [
    check for module in (test_manifests, test_manifest_production, test_manifest_security,
                         test_manifest_observability, test_monitoring,
                         test_manifest_redis_backup)
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

