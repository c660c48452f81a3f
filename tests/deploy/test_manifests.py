"""deploy/k8s, rendered per overlay: strict schemas first, then what schemas cannot see:
every MAAS_* name is a field of runtime.settings.Settings, ports and probes agree with the
settings, grace periods cover the drains, GPUs are whole, KEDA reads the streams the code
writes (scheduler/keys.py), and each image runs the entry point its role needs.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from kubernetes_validate.utils import latest_version

from runtime import metrics
from runtime.settings import Settings

if TYPE_CHECKING:
    from conftest import Rendered

SETTINGS = {"MAAS_" + f.name.upper() for f in dataclasses.fields(Settings)}
# Oldest Kubernetes the manifests are for: native gRPC probes are GA in 1.27, the preStop
# `sleep` action is on by default from 1.30. And the newest that kubernetes-validate knows.
K8S_VERSIONS = ("1.30", ".".join(latest_version().split(".")[:2]))
ROLES = ("gateway", "scheduler", "worker")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")  # the kubelet's $(VAR) in env values
GPU = "nvidia.com/gpu"
# A batch taken just before SIGTERM ends by its calls' default deadline; then ack and exit.
DRAIN_MARGIN_S = 10
KEDA_MODELS = {"ScaledObject": keda.ScaledObject, "ScaledJob": keda.ScaledJob,
               "TriggerAuthentication": keda.TriggerAuthentication}
# metrics-api trigger metadata that KEDA reads (pkg/scalers/metrics_api_scaler.go); the CRD
# types it as map[string]string, so a misspelt key would otherwise pass unnoticed.
METRICS_API_KEYS = {
    "url", "format", "valueLocation", "targetValue", "activationTargetValue", "authMode",
    "method", "unsafeSsl", "aggregateFromKubeServiceEndpoints", "aggregationType",
}


def test_overlays_cpu_and_gpu_exist() -> None:
    overlays = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "overlays"
    assert {"cpu", "gpu"} <= {p.name for p in overlays.iterdir()}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_objects_pass_strict_schemas(rendered: Rendered, version: str,
                                             tmp_path: Path) -> None:
    # Custom resources (KEDA, the Prometheus Operator's) have no offline schemas: their own
    # tests check them (below, and tests/deploy/test_monitoring.py).
    builtin = [d for d in rendered.docs
               if not d["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/"))]
    path = tmp_path / f"{rendered.overlay}.yaml"
    path.write_text(yaml.safe_dump_all(builtin))
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(path)],
        capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    # An unknown kind or apiVersion is only a WARN with exit code 0: count the passes.
    assert out.count(" passed for resource ") == len(builtin), out


def _unknown_fields(given: Any, kept: Any, path: str = "") -> list[str]:
    """Keys in `given` that the pydantic model dropped (pydantic ignores extra keys)."""
    if isinstance(given, dict):
        return [x for k, v in given.items() for x in (
            [f"{path}.{k}"] if not isinstance(kept, dict) or k not in kept
            else _unknown_fields(v, kept[k], f"{path}.{k}"))]
    if isinstance(given, list) and isinstance(kept, list):
        return [x for i, (g, k) in enumerate(zip(given, kept, strict=False))
                for x in _unknown_fields(g, k, f"{path}[{i}]")]
    return []


def test_keda_objects_match_their_schema(rendered: Rendered) -> None:
    for doc in (d for d in rendered.docs if d["apiVersion"].startswith("keda.sh/")):
        where = f"{rendered.overlay}: {doc['kind']}/{doc['metadata']['name']}"
        assert doc["apiVersion"] == "keda.sh/v1alpha1", where
        obj = KEDA_MODELS[doc["kind"]].model_validate(doc)
        kept = obj.model_dump(by_alias=True, exclude_unset=True, mode="json")
        assert _unknown_fields(doc, kept) == [], where
        for trigger in doc["spec"].get("triggers", []):
            assert trigger["type"] == "metrics-api", where
            assert set(trigger["metadata"]) <= METRICS_API_KEYS, where


def test_every_maas_env_name_is_a_setting(rendered: Rendered) -> None:
    for where, _, container in rendered.containers():
        env = rendered.env(container)
        names = {n for n in env if n.startswith("MAAS_")}
        assert names <= SETTINGS, f"{where}: unknown settings {sorted(names - SETTINGS)}"
        Settings.from_env(env)  # and each value parses as its field's type
        defined: set[str] = set()
        for var in container.get("env", []):  # $(VAR) expands only from earlier variables
            refs = set(VAR_REF.findall(var.get("value", "")))
            assert refs <= defined, f"{where}: {var['name']} uses undefined {refs - defined}"
            defined.add(var["name"])
    for ref in {s["configMapRef"]["name"] for _, _, c in rendered.containers()
                for s in c.get("envFrom", [])}:
        stray = set(rendered.get("ConfigMap", ref)["data"]) - SETTINGS
        assert not stray, f"{rendered.overlay}: ConfigMap {ref} holds non-settings {stray}"


def test_every_setting_is_set_explicitly(rendered: Rendered) -> None:
    """Every Settings field is spelled out for each process (deploy/k8s/base/maas.env),
    so a deployment never runs on a default that suits a laptop (e.g. 127.0.0.1)."""
    for role in ROLES:
        missing = SETTINGS - set(rendered.env(rendered.container(role)))
        assert not missing, f"{rendered.overlay}: {role} lacks {sorted(missing)}: add to maas.env"


def test_gateway_listens_where_service_and_probes_look(rendered: Rendered) -> None:
    settings = rendered.settings("gateway")
    gateway = rendered.container("gateway")
    assert settings.gateway_host == "0.0.0.0", "a gateway on 127.0.0.1 is unreachable"
    (port,) = [p for p in gateway["ports"] if p["name"] == "grpc"]
    assert port["containerPort"] == settings.gateway_port
    for probe in ("readinessProbe", "livenessProbe"):
        assert set(gateway[probe]) & {"exec", "httpGet", "tcpSocket"} == set(), probe
        assert gateway[probe]["grpc"] == {"port": settings.gateway_port, "service": ""}, probe
    service = rendered.get("Service", "maas-gateway")
    assert rendered.selected(service["spec"]["selector"]) == [rendered.workload("gateway")]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["grpc"]


def test_gateway_requires_api_keys(rendered: Rendered) -> None:
    """Auth is on in every deployment, with the first admin key from a Secret (never git)."""
    settings = rendered.settings("gateway")
    assert settings.is_auth_on
    pod = rendered.workload("gateway")["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m["name"] for m in rendered.container("gateway")["volumeMounts"]}
    key_dir = str(Path(settings.admin_key_file).parent)
    assert secrets[mounts[key_dir]] == "maas-admin-key"


def test_artifact_store_is_shared_read_write_many(rendered: Rendered) -> None:
    if rendered.settings("worker").artifact_url:
        return  # object storage: test_object_storage_replaces_the_shared_volume
    claim = rendered.get("PersistentVolumeClaim", "maas-artifacts")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for role in ("gateway", "worker"):
        pod = rendered.workload(role)["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"]
                     if v.get("persistentVolumeClaim", {}).get("claimName") == "maas-artifacts"]
        mounts = {m["name"]: m["mountPath"] for m in rendered.container(role)["volumeMounts"]}
        assert Path(mounts[volume["name"]]) == rendered.settings(role).data_dir, role


def test_object_storage_replaces_the_shared_volume(rendered: Rendered) -> None:
    """components/object-storage: a bucket from a Secret's standard AWS variables; each pod's
    artifacts directory (cache and spool) is its own emptyDir; no RWX claim is left."""
    settings = rendered.settings("gateway")
    if not settings.artifact_url:
        return
    assert rendered.settings("worker").artifact_url == settings.artifact_url
    assert rendered.of_kind("PersistentVolumeClaim") == []
    for role in ("gateway", "worker"):
        container = rendered.container(role)
        secrets = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container["env"]
                   if "secretKeyRef" in v.get("valueFrom", {})}
        assert secrets["AWS_ACCESS_KEY_ID"]["name"] == "maas-object-store", role
        assert secrets["AWS_SECRET_ACCESS_KEY"]["name"] == "maas-object-store", role
        pod = rendered.workload(role)["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[str(settings.data_dir)]]
        assert "emptyDir" in volume and "sizeLimit" in volume["emptyDir"], role
    minio = [s for s in rendered.of_kind("StatefulSet") if s["metadata"]["name"] == "maas-minio"]
    if minio:  # components/minio: the bucket Job creates the bucket the settings name
        bucket = urlsplit(settings.artifact_url).netloc
        job = rendered.get("Job", "maas-minio-bucket")["spec"]["template"]["spec"]
        assert f"maas/{bucket}" in " ".join(job["containers"][0]["args"])
        service = rendered.get("Service", "maas-minio")
        assert rendered.selected(service["spec"]["selector"]) == minio


def test_grace_periods_cover_the_drains(rendered: Rendered) -> None:
    worker = rendered.workload("worker")["spec"]["template"]["spec"]
    settings = rendered.settings("worker")
    assert worker["terminationGracePeriodSeconds"] >= (
        settings.default_deadline_s + DRAIN_MARGIN_S)
    gateway = rendered.workload("gateway")["spec"]["template"]["spec"]
    pre_stop = rendered.container("gateway")["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert gateway["terminationGracePeriodSeconds"] > (
        pre_stop + rendered.settings("gateway").shutdown_grace_s)


def test_gpus_are_whole_and_only_on_gpu_workers(rendered: Rendered) -> None:
    for where, _, container in rendered.containers():
        resources = container.get("resources", {})
        for kind in ("limits", "requests"):
            count = resources.get(kind, {}).get(GPU)
            assert count is None or (type(count) is int and count >= 1), f"{where}: {count!r}"
        if GPU in resources.get("requests", {}):
            assert resources["requests"][GPU] == resources["limits"][GPU], where
    worker = rendered.container("worker")
    pod = rendered.workload("worker")["spec"]["template"]["spec"]
    device = rendered.settings("worker").worker_device
    if rendered.overlay.split("-")[0] == "gpu":  # gpu, and the overlays built on it
        assert worker["resources"]["limits"][GPU] == 1
        assert device == "cuda:0"
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod.get("nodeSelector")
    else:
        assert GPU not in worker["resources"].get("limits", {})
        assert device == "cpu"


def test_each_role_runs_its_entry_point_from_its_image(rendered: Rendered) -> None:
    images = {}
    for role in ROLES:
        container = rendered.container(role)
        assert container["command"] in (["python", "-m", role], ["maas", role]), role
        assert not container.get("args"), role
        images[role] = container["image"]
        name, _, tag = images[role].rpartition(":")
        assert name and tag not in ("", "latest"), f"{role}: pin a tag, not {images[role]}"
    assert images["scheduler"] == images["gateway"], "the scheduler runs the torch-free image"
    assert "maas-gateway" in images["gateway"] and "maas-worker" in images["worker"]


def check_reads_the_schedulers_metrics(rendered: Rendered, meta: dict[str, str]) -> None:
    """A metrics-api trigger reads /metrics of the schedulers, as Prometheus text, through a
    Service of the namespace that selects them on their metrics port."""
    url = urlsplit(meta["url"])
    assert url.scheme == "http" and url.path == "/metrics"
    name, namespace, svc = str(url.hostname).split(".")
    assert (namespace, svc) == (rendered.namespace, "svc")  # KEDA runs in its namespace
    service = rendered.get("Service", name)
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    scheduler = rendered.workload("scheduler")
    assert rendered.selected(service["spec"]["selector"]) == [scheduler]
    (container,) = scheduler["spec"]["template"]["spec"]["containers"]
    (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert target["containerPort"] == rendered.settings("scheduler").metrics_port
    assert meta["format"] == "prometheus"


def test_keda_scales_workers_on_the_signal_the_schedulers_export(rendered: Rendered) -> None:
    scaled = rendered.of_kind("ScaledObject")
    if rendered.overlay == "gpu":
        assert scaled, "the gpu overlay autoscales workers with KEDA"
    pools = {w["metadata"]["name"] for w in rendered.model_pools()}
    for obj in scaled:
        spec = obj["spec"]
        if spec["scaleTargetRef"]["name"] in pools:
            continue  # test_manifest_model_pool.py
        assert spec["scaleTargetRef"]["name"] == rendered.workload("worker")["metadata"]["name"]
        (trigger,) = spec["triggers"]  # one signal for every model, priority and gang
        meta = trigger["metadata"]
        check_reads_the_schedulers_metrics(rendered, meta)
        # The gauge the scheduler exports (scheduler/stats.py), read as Prometheus text.
        assert meta["valueLocation"] == metrics.WORKERS_WANTED._name
        assert float(meta["targetValue"]) == 1, "the signal counts workers already"
        assert float(meta["activationTargetValue"]) == 0, "one waiting job wakes a worker"
        # A cold GPU worker outlasts a deadline: scale-to-zero is an opt-in.
        assert int(spec.get("minReplicaCount", 0)) >= 1
        assert int(spec["maxReplicaCount"]) >= int(spec["minReplicaCount"])
        assert spec["fallback"]["replicas"] >= 1, "schedulers unreachable: keep a worker"
