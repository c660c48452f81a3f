"""deploy/k8s/components/redis-cluster, and every overlay's MAAS_REDIS_URL: each process
reaches the Redis that is rendered (every node of a cluster, as scheduler/connection.py reads
the URL), a cluster has 3 primaries with a replica each, its nodes announce names clients can
dial and reach each other on the bus, acknowledged submits wait for no more replicas than
exist, and the create Job, run against six real `redis-server`s started with the rendered
redis.conf and arguments, forms the cluster once and then leaves it alone.
(AOF only, maxmemory under the limit, noeviction, PriorityClass, PDB and NetworkPolicy are
checked for the cluster's nodes as for the single Redis: the `queue` workload.)
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from scheduler.connection import cluster_nodes, is_cluster_url
from tests.deploy.conftest import K8S, Rendered, render, selects

if TYPE_CHECKING:
    from conftest import Doc

OVERLAY = "cpu-redis-cluster"  # the overlay that includes the component
BUS_OFFSET = 10000  # Redis Cluster's bus listens on the client port + 10000
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _conf(rendered: Rendered) -> dict[str, str]:
    return {line[0]: line[1] if len(line) > 1 else "" for line in rendered.redis_conf()}


def _is_cluster(rendered: Rendered) -> bool:
    return _conf(rendered).get("cluster-enabled") == "yes"


def _redis_container(workload: Doc) -> Doc:
    (container,) = [c for c in workload["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "redis"]
    return dict(container)


def _job_script(rendered: Rendered) -> tuple[Doc, str, list[str]]:
    """The create Job's container, its shell script and its NODES."""
    (job,) = [j for j in rendered.of_kind("Job")
              if "--cluster create" in " ".join(j["spec"]["template"]["spec"]["containers"][0]
                                                ["command"])]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["sh", "-c"]
    return container, container["command"][2], rendered.env(container)["NODES"].split()


def _node_names(rendered: Rendered) -> list[tuple[str, int]]:
    """host:port of every pod of the Redis StatefulSet, by its governing Service."""
    nodes = rendered.workload("queue")
    service = rendered.get("Service", nodes["spec"]["serviceName"])
    port = int(_conf(rendered)["port"])
    return [(f"{nodes['metadata']['name']}-{i}.{service['metadata']['name']}", port)
            for i in range(nodes["spec"]["replicas"])]


def test_the_cluster_overlay_renders_the_component() -> None:
    rendered = Rendered(OVERLAY, render(K8S / "overlays" / OVERLAY))
    assert _is_cluster(rendered)
    names = {d["metadata"]["name"] for d in rendered.docs}
    assert "maas-redis-cluster" in names and "maas-redis" not in names, "the single Redis goes"


def test_every_redis_url_reaches_the_rendered_redis(rendered: Rendered) -> None:
    """A cluster URL lists every node by the name the StatefulSet gives it; a plain URL
    names a Service of the Redis pod (or, from inside that pod, 127.0.0.1)."""
    queue = rendered.workload("queue")
    for where, _, container in rendered.containers():
        url = rendered.env(container).get("MAAS_REDIS_URL")
        if url is None:
            continue
        if _is_cluster(rendered):
            assert is_cluster_url(url), f"{where}: {url} is not a cluster URL"
            nodes, options = cluster_nodes(url)
            assert sorted(nodes) == _node_names(rendered), f"{where}: {nodes}"
            assert options["password"] == "$(REDIS_PASSWORD)", where
            continue
        host = str(urlsplit(url).hostname)
        if host == "127.0.0.1":
            assert container in queue["spec"]["template"]["spec"]["containers"], where
            continue
        service = rendered.get("Service", host)
        assert rendered.selected(service["spec"]["selector"]) == [queue], f"{where}: {host}"


def test_a_cluster_has_three_primaries_with_a_replica_each(rendered: Rendered) -> None:
    if not _is_cluster(rendered):
        return
    nodes = rendered.workload("queue")
    _, script, job_nodes = _job_script(rendered)
    (replicas,) = map(int, re.findall(r"--cluster-replicas (\d+)", script))
    assert replicas >= 1, "a primary without a replica loses its slots with its node"
    assert nodes["spec"]["replicas"] == 6 and nodes["spec"]["replicas"] // (replicas + 1) == 3
    assert [tuple(n.rsplit(":", 1)) for n in job_nodes] == [
        (h, str(p)) for h, p in _node_names(rendered)], "the Job joins every node"
    # Every node must be up (and resolvable) before the cluster, and so readiness, exists.
    assert nodes["spec"]["podManagementPolicy"] == "Parallel"
    service = rendered.get("Service", nodes["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    settings = {w["metadata"]["name"]: rendered.settings_of(w) for w in rendered.workloads()
                if w["kind"] == "Deployment"}
    for name, s in settings.items():
        assert s.redis_wait_replicas <= replicas, f"{name}: waits for more replicas than exist"


def test_a_single_redis_has_no_replica_to_wait_for(rendered: Rendered) -> None:
    if _is_cluster(rendered):
        return
    for w in rendered.workloads():
        if w["kind"] == "Deployment":
            assert rendered.settings_of(w).redis_wait_replicas == 0, (
                f"{rendered.overlay}: {w['metadata']['name']}: every submit would time out")


def test_cluster_nodes_announce_names_and_open_the_bus_to_each_other(
        rendered: Rendered) -> None:
    if not _is_cluster(rendered):
        return
    nodes = rendered.workload("queue")
    container = _redis_container(nodes)
    args = container["args"]
    option = {args[i]: args[i + 1] for i in range(2, len(args) - 1, 2)}
    assert option["--masterauth"] == option["--requirepass"] == "$(REDIS_PASSWORD)"
    fields = {v["name"]: v["valueFrom"]["fieldRef"]["fieldPath"] for v in container["env"]
              if "fieldRef" in v.get("valueFrom", {})}
    # Clients are redirected to the name each node announces: the pod's DNS name.
    assert _conf(rendered)["cluster-preferred-endpoint-type"] == "hostname"
    host = option["--cluster-announce-hostname"]
    assert host == f"$(POD_NAME).{nodes['spec']['serviceName']}"
    assert fields["POD_NAME"] == "metadata.name"
    announced_ip = VAR.fullmatch(option["--cluster-announce-ip"])
    assert announced_ip and fields[announced_ip[1]] == "status.podIP"
    bus = int(_conf(rendered)["port"]) + BUS_OFFSET
    assert {"name": "bus", "containerPort": bus} in container["ports"]
    labels = nodes["spec"]["template"]["metadata"]["labels"]
    admitted = [peer for p in rendered.of_kind("NetworkPolicy")
                if selects(p["spec"]["podSelector"], labels)
                for rule in p["spec"].get("ingress", [])
                if {"port": bus, "protocol": "TCP"} in rule.get("ports", [])
                for peer in rule.get("from", [{}])]
    assert admitted, f"{rendered.overlay}: no NetworkPolicy admits the bus port {bus}"
    for peer in admitted:  # the nodes, and only them
        assert set(peer) == {"podSelector"}, f"{rendered.overlay}: bus open to {peer}"
        assert [w for w in rendered.workloads() if selects(
            peer["podSelector"], w["spec"]["template"]["metadata"]["labels"])] == [nodes]


# --- the create Job, run for real ------------------------------------------------------------


def _free_port_pair() -> int:
    """A free port whose bus port (+ 10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + BUS_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port


@pytest.fixture
def local_nodes(tmp_path: Path) -> Iterator[tuple[list[int], str]]:
    """Seven redis-servers (six for the cluster, one spare) from the rendered config and
    arguments, on free ports; and their password."""
    binary = shutil.which("redis-server")
    if binary is None:  # a missing binary fails, never skips
        pytest.fail("redis-server is not on PATH; install it (apt-get install redis-server)")
    rendered = Rendered(OVERLAY, render(K8S / "overlays" / OVERLAY))
    nodes = rendered.workload("queue")
    container = _redis_container(nodes)
    conf_text = "\n".join(" ".join(line) for line in rendered.redis_conf())
    password = "0123456789abcdef"
    procs, ports = [], []
    try:
        for i in range(7):
            data = tmp_path / f"node{i}"
            data.mkdir()
            conf = tmp_path / f"node{i}.conf"
            conf.write_text(conf_text.replace("dir /data", f"dir {data}"))
            values = {"REDIS_PASSWORD": password, "POD_IP": "127.0.0.1",
                      "POD_NAME": f"{nodes['metadata']['name']}-{i}"}
            args = [VAR.sub(lambda m, v=values: v[m[1]], a) for a in container["args"][2:]]
            port = _free_port_pair()
            procs.append(subprocess.Popen(
                [binary, str(conf), *args, "--port", str(port), "--bind", "127.0.0.1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            ports.append(port)
        yield ports, password
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def _run_job(script: str, ports: list[int], password: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": password,
           "NODES": " ".join(f"127.0.0.1:{p}" for p in ports)}
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def _cluster_info(port: int, password: str) -> dict[str, str]:
    out = subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"], text=True,
                         env={"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": password},
                         capture_output=True, timeout=10, check=True).stdout
    return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)


def test_the_create_job_forms_the_cluster_once(local_nodes: tuple[list[int], str]) -> None:
    ports, password = local_nodes
    rendered = Rendered(OVERLAY, render(K8S / "overlays" / OVERLAY))
    _, script, job_nodes = _job_script(rendered)
    six, spare = ports[:len(job_nodes)], ports[len(job_nodes)]
    created = _run_job(script, six, password)
    assert created.returncode == 0, created.stdout + created.stderr
    # Every node must come to see 3 primaries serving slots among 6 nodes; gossip spreads
    # the slots a node did not assign itself within a moment, so wait for all of them.
    deadline = time.monotonic() + 30
    while True:
        seen = [_cluster_info(p, password) for p in six]
        views = {(i.get("cluster_state"), i.get("cluster_size"), i.get("cluster_known_nodes"))
                 for i in seen}
        if views == {("ok", "3", "6")}:
            break
        assert time.monotonic() < deadline, f"the cluster did not form: {views}"
        time.sleep(0.2)
    # Again (a re-applied or re-created Job): nothing to do.
    again = _run_job(script, six, password)
    assert again.returncode == 0 and "formed already" in again.stdout, again.stderr
    # A fresh node beside a formed cluster (a volume lost): refuse, change nothing.
    mixed = _run_job(script, [*six, spare], password)
    assert mixed.returncode != 0 and "by hand" in mixed.stderr
    assert _cluster_info(spare, password)["cluster_known_nodes"] == "1"
    assert _cluster_info(six[0], password)["cluster_known_nodes"] == "6"
