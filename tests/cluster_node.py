"""A Redis that refuses what a Redis Cluster refuses, for the tests of issue #15.

One redis-server with cluster mode on that owns every slot, and the queue's scripts loaded
with a `#!lua` shebang: Redis itself then refuses keys of several slots in one script or
MULTI (CROSSSLOT) and a script's undeclared key of another slot, as a real cluster would,
while a plain client still reaches every key (one node). The 3 + 3 cluster of failover tests
is another matter (issue #15, scope 4).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis

from maas.cli.ports import free_port
from scheduler import scripts


def start_cluster_node(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server in cluster mode that owns every slot; a new port when one is taken."""
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
             "--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                    while client.cluster("info")["cluster_state"] != "ok":
                        assert time.monotonic() < deadline, "the one-node cluster did not form"
                        time.sleep(0.05)
                    return proc, port
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        proc.kill()
        proc.wait(10)
    pytest.fail("redis-server in cluster mode did not start")


def check_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads every script with a shebang from now on: Redis (>= 7) checks the slots of the
    keys a script touches, declared or not."""
    source = scripts._source
    monkeypatch.setattr(scripts, "_source", lambda name: "#!lua\n" + source(name))
