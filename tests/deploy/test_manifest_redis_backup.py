"""components/redis-backup and the restore runbook in deploy/k8s/README.md: the sidecar reads
the files the Redis container writes, reaches that Redis, and runs a command that exists; the
runbook's manifests are valid Kubernetes objects that restore where Redis will read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scheduler import backup
from tests.deploy.conftest import COMPONENT, K8S, Doc, Rendered, render

OVERLAY = K8S / "overlays" / "cpu-minio"  # the overlay that includes the component


def redis_pod(docs: tuple[Doc, ...]) -> Doc:
    """The pod of the Redis StatefulSet (component `queue`: one Redis, or a cluster's nodes)."""
    pod: Doc = next(d for d in docs if d["kind"] == "StatefulSet" and d["spec"]["template"][
        "metadata"]["labels"].get(COMPONENT) == "queue")["spec"]["template"]["spec"]
    return pod


def mount_of(container: Doc, volume: str) -> Doc:
    return next(m for m in container["volumeMounts"] if m["name"] == volume)


def test_the_sidecar_reads_what_redis_writes(rendered: Rendered) -> None:
    pod = redis_pod(rendered.docs)
    containers = {c["name"]: c for c in pod["containers"]}
    if rendered.overlay == OVERLAY.name:
        assert "backup" in containers, "cpu-minio includes components/redis-backup"
    if "backup" not in containers:
        return
    redis_data = mount_of(containers["redis"], "data")
    sidecar = containers["backup"]
    command = sidecar["command"]
    assert command[:5] == ["python", "-m", "scheduler.backup", "create", "--data-dir"]
    assert command[5] == redis_data["mountPath"]  # Redis's `dir` as the sidecar sees it
    assert mount_of(sidecar, "data") == {**redis_data, "readOnly": True}
    env = {e["name"]: e for e in sidecar["env"]}
    assert "@127.0.0.1:6379/" in env["MAAS_REDIS_URL"]["value"]  # the pod's own Redis
    assert env["BACKUP_URL"]["value"].startswith("s3://")
    assert "$(BACKUP_URL)" in command
    # The argv parses: the sidecar runs a command the module has.
    args = [a.replace("$(BACKUP_URL)", env["BACKUP_URL"]["value"]) for a in command[3:]]
    ran = subprocess.run([sys.executable, "-c", "import sys\nfrom scheduler.backup import "
                          "main\nmain(sys.argv[1:] + ['--help'])", *args],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    # /tmp holds the archive while it uploads (read-only root).
    assert mount_of(sidecar, "backup-tmp")["mountPath"] == "/tmp"
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True


def runbook_manifests() -> list[Doc]:
    text = (K8S / "README.md").read_text()
    start = text.index("kubectl -n maas apply -f - <<'YAML'\n") + len(
        "kubectl -n maas apply -f - <<'YAML'\n")
    return [d for d in yaml.safe_load_all(text[start:text.index("\nYAML\n", start)]) if d]


def test_the_restore_runbook_is_valid_and_restores_where_redis_reads(tmp_path: Path) -> None:
    docs = runbook_manifests()
    path = tmp_path / "restore.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    ran = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", "1.30",
                          str(path)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    pod = next(d for d in docs if d["kind"] == "Pod")["spec"]
    rendered = render(OVERLAY)
    statefulset = next(d for d in rendered if d["kind"] == "StatefulSet"
                       and d["metadata"]["name"] == "maas-redis")
    template = statefulset["spec"]["volumeClaimTemplates"][0]
    # The claim the StatefulSet will adopt: <template>-<statefulset>-0, same size and mode.
    assert claim["metadata"]["name"] == f"{template['metadata']['name']}-maas-redis-0"
    assert claim["spec"] == template["spec"]
    container = pod["containers"][0]
    command = container["command"]
    assert command[:4] == ["python", "-m", "scheduler.backup", "restore"]
    data_dir = command[command.index("--data-dir") + 1]
    redis = next(c for c in redis_pod(rendered)["containers"] if c["name"] == "redis")
    assert data_dir == mount_of(redis, "data")["mountPath"] == mount_of(container,
                                                                        "data")["mountPath"]
    assert pod["securityContext"]["runAsUser"] == redis_pod(rendered)["securityContext"][
        "runAsUser"]  # the restored files belong to Redis's user


@pytest.mark.parametrize("name", ["appendonly.aof.1.base.rdb", "appendonly.aof.1.incr.aof"])
def test_manifest_lines_name_the_files(name: str) -> None:
    text = f"file {name} seq 1 type b\n"
    assert backup._manifest_files(text) == [name]
    with pytest.raises(backup.BackupError):
        backup._manifest_files("file ../../etc/passwd seq 1 type b\n")
