"""Renders each overlay of deploy/k8s with `kubectl kustomize` (offline) for the deploy tests.

`kubectl` must be on PATH: a missing binary fails the tests, never skips them (CI installs it).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
COMPONENT = "app.kubernetes.io/component"
POOL_PIN = "MAAS_WORKER_MODELS"  # set in a worker container's env: a model pool

Doc = dict[str, Any]


@functools.cache
def render(path: Path) -> tuple[Doc, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH: the deploy tests render manifests with "
                    "`kubectl kustomize` (install kubectl >= 1.27)", pytrace=False)
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed:\n{done.stderr}", pytrace=False)
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


@dataclasses.dataclass(frozen=True)
class Rendered:
    """One rendered overlay, with the look-ups the tests share."""

    overlay: str
    docs: tuple[Doc, ...]

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Doc:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert found, f"{self.overlay}: no {kind}/{name} rendered"
        return found[0]

    @property
    def namespace(self) -> str:
        (ns,) = self.of_kind("Namespace")
        return str(ns["metadata"]["name"])

    def workloads(self) -> Iterator[Doc]:
        return (d for d in self.docs if d["kind"] in WORKLOAD_KINDS)

    def workload(self, component: str) -> Doc:
        """The one workload of a component; for `worker`, the generic fleet (no model pool)."""
        found = [w for w in self.workloads()
                 if w["spec"]["template"]["metadata"]["labels"].get(COMPONENT) == component
                 and not self.pinned_models(w)]
        assert len(found) == 1, f"{self.overlay}: want one {component} workload, got {found}"
        return found[0]

    def pinned_models(self, workload: Doc) -> str:
        """MAAS_WORKER_MODELS as the workload's own `worker` container sets it ("" if not)."""
        containers = workload["spec"]["template"]["spec"]["containers"]
        return next((v.get("value", "") for c in containers if c["name"] == "worker"
                     for v in c.get("env", []) if v["name"] == POOL_PIN), "")

    def model_pools(self) -> list[Doc]:
        """Worker Deployments dedicated to some models (components/model-pool)."""
        return [w for w in self.workloads() if self.pinned_models(w)]

    def containers(self) -> Iterator[tuple[str, Doc, Doc]]:
        """(where, pod spec, container) for every container of every workload."""
        for w in self.workloads():
            pod = w["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []) + pod["containers"]:
                yield f"{self.overlay}: {w['kind']}/{w['metadata']['name']}/{c['name']}", pod, c

    def container(self, component: str) -> Doc:
        pod = self.workload(component)["spec"]["template"]["spec"]
        (c,) = [c for c in pod["containers"] if c["name"] == component]
        return dict(c)

    def env(self, container: Doc) -> dict[str, str]:
        """The environment the container starts with (Secret values as placeholders)."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            ref = source["configMapRef"]["name"]
            env.update({k: str(v) for k, v in self.get("ConfigMap", ref)["data"].items()})
        for var in container.get("env", []):
            env[var["name"]] = str(var.get("value", f"<{var['name']} from valueFrom>"))
        return env

    def settings(self, component: str) -> Settings:
        return Settings.from_env(self.env(self.container(component)))

    def settings_of(self, workload: Doc) -> Settings:
        """The settings its first container starts with (a model pool's worker)."""
        return Settings.from_env(self.env(workload["spec"]["template"]["spec"]["containers"][0]))

    def redis_conf(self) -> list[list[str]]:
        """redis.conf of the Redis workload (component `queue`: one Redis, or the nodes of a
        Redis Cluster) as [directive, arguments] lines."""
        pod = self.workload("queue")["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
        (conf,) = self.get("ConfigMap", volume["configMap"]["name"])["data"].values()
        return [ln.split(maxsplit=1) for ln in conf.splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]

    def selected(self, selector: dict[str, str]) -> list[Doc]:
        """The workloads whose pods carry every label of `selector`."""
        return [w for w in self.workloads()
                if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v
                       for k, v in selector.items())]


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a pod's labels."""
    operators = {
        "In": lambda key, values: labels.get(key) in values,
        "NotIn": lambda key, values: labels.get(key) not in values,
        "Exists": lambda key, _: key in labels,
        "DoesNotExist": lambda key, _: key not in labels,
    }
    return (all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
            and all(operators[e["operator"]](e["key"], e.get("values", []))
                    for e in selector.get("matchExpressions", [])))


@pytest.fixture(params=OVERLAYS, scope="module")
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param, render(K8S / "overlays" / request.param))

