"""Redis Cluster faults under load (#15): a primary SIGKILLed (its replica takes over), a
slot migrated to another primary; maas goes on.

Callers submit asynchronous jobs to `cnn` (retrying UNAVAILABLE with the same request_id, as
a client should) and make synchronous calls, while the primary of `cnn`'s slot is killed.
Afterwards every job the gateway acknowledged must reach its outcome. Replication is
asynchronous: without MAAS_REDIS_WAIT_REPLICAS a job acknowledged in the last moments before
the kill may be gone (README, Guarantees: the ledger prints how many); with
MAAS_REDIS_WAIT_REPLICAS=1 none may be. The killed node restarts once a replica has taken
over, as its pod would, and rejoins as that replica's own replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import redis

import maas
from maas import errors
from maas.v1 import inference_service_pb2 as ipb
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.ledger import Ledger, audit
from tests.redis_cluster import RedisClusterServer, start_redis_cluster, sync_client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RETRYABLE = (errors.Unavailable, errors.DeadlineExceeded)
SUBMITTERS = 6
LOAD_S = 6.0
KILL_AT_S = 2.0


@pytest.fixture
def own_redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServer]:
    """A cluster of its own: the test kills one of its primaries."""
    server = start_redis_cluster(tmp_path / "redis-cluster")
    yield server
    server.stop()


async def _submitter(client: maas.AsyncClient, name: str, until: float,
                     acknowledged: dict[str, str]) -> None:
    x = np.random.default_rng(len(name)).random((1, 1, 28, 28), dtype=np.float32)
    n = 0
    while time.monotonic() < until:
        request_id = f"{name}-{n}"
        while True:  # the same request_id until acknowledged: a retry never runs it twice
            assert time.monotonic() < until + 60, f"{request_id} never acknowledged"
            try:
                job = await client.submit("cnn", {"input": x}, request_id=request_id,
                                          deadline_s=120)
                break
            except RETRYABLE:
                await asyncio.sleep(0.2)
        acknowledged[job.job_id] = request_id
        n += 1
        await asyncio.sleep(0.01)


async def _caller(client: maas.AsyncClient, until: float, answered: list[int]) -> None:
    x = np.random.default_rng(7).random((4, 1, 28, 28), dtype=np.float32)
    while time.monotonic() < until:
        try:
            out = await client.infer("cnn", {"input": x}, timeout_s=20)
            assert out["output"].shape == (4, 10)
            answered[0] += 1
        except RETRYABLE:
            answered[1] += 1
            await asyncio.sleep(0.2)


@dataclass
class Load:
    """What the callers saw: acknowledged job ids, synchronous calls answered and refused
    retryably, and (after `settle`) each acknowledged job's final state or absence."""

    acknowledged: dict[str, str] = field(default_factory=dict)
    answered: list[int] = field(default_factory=lambda: [0, 0])
    states: Counter[str] = field(default_factory=Counter)
    missing: set[str] = field(default_factory=set)

    def line(self, ledger: Ledger) -> str:
        return (f"acknowledged {len(self.acknowledged)}, completed "
                f"{sum(self.states.values())} ({dict(self.states)}), lost "
                f"{len(self.missing)}, duplicated {ledger.duplicated}; synchronous calls "
                f"answered {self.answered[0]}, refused retryably {self.answered[1]}")


async def under_load(target: str, fault: Callable[[], Awaitable[None]]) -> Load:
    """Submitters and a synchronous caller for LOAD_S; `fault` runs KILL_AT_S into it; then
    every acknowledged job is waited for."""
    load = Load()
    async with maas.AsyncClient(target, timeout_s=30) as client:
        until = time.monotonic() + LOAD_S
        tasks = [asyncio.ensure_future(_submitter(client, f"s{i}", until, load.acknowledged))
                 for i in range(SUBMITTERS)]
        tasks.append(asyncio.ensure_future(_caller(client, until, load.answered)))
        await asyncio.sleep(KILL_AT_S)
        await fault()
        await asyncio.gather(*tasks)
        load.states, load.missing = await _outcomes(client, load.acknowledged)
    return load


def settled_ledger(cluster: Cluster, server: RedisClusterServer) -> Ledger:
    assert cluster.service("gateway").poll() is None
    assert all(cluster.service(f"worker-{i}").poll() is None for i in (1, 2))
    with sync_client(server.url) as r:
        return audit(r, ["cnn", "mlp"])


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_primary_sigkilled_under_load(tmp_path: Path,
                                            own_redis_cluster: RedisClusterServer,
                                            wait_replicas: int) -> None:
    cluster = start_cluster(tmp_path, workers=2, redis_cluster=own_redis_cluster,
                            redis_wait_replicas=str(wait_replicas))
    victim = own_redis_cluster.primary_of(keys.stream("cnn"))
    took_over_s: list[float] = []

    async def kill_primary() -> None:
        victim.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        took_over_s.append(await asyncio.to_thread(
            _wait_promoted, own_redis_cluster, keys.stream("cnn"), victim.port) - killed_at)
        # As its pod would: it restarts and rejoins as the new primary's replica (with
        # MAAS_REDIS_WAIT_REPLICAS=1, cnn's submits wait for it: UNAVAILABLE until then).
        victim.proc.wait(10)
        await asyncio.to_thread(own_redis_cluster.restart, victim)

    try:
        load = await under_load(cluster.target, kill_primary)
        ledger = settled_ledger(cluster, own_redis_cluster)
    finally:
        stop_cluster(cluster)
    print(f"\n[fault redis primary SIGKILL, MAAS_REDIS_WAIT_REPLICAS={wait_replicas}] "
          f"{load.line(ledger)}; a replica was primary {took_over_s[0]:.1f}s after the kill")
    assert len(load.acknowledged) > 50 and load.answered[0] > 0
    assert ledger.duplicated == 0 and ledger.lost == 0, ledger
    if wait_replicas:
        assert not load.missing, f"acknowledged jobs lost with WAIT: {sorted(load.missing)[:5]}"
    assert load.states["SUCCEEDED"] + len(load.missing) == len(load.acknowledged), load.states


async def test_slot_migrated_under_load(tmp_path: Path,
                                        own_redis_cluster: RedisClusterServer) -> None:
    """cnn's slot moves to another primary key by key while jobs flow: calls meet MOVED, ASK
    and TRYAGAIN; nothing acknowledged may be lost (MIGRATE moves each key atomically)."""
    cluster = start_cluster(tmp_path, workers=2, redis_cluster=own_redis_cluster)
    source = own_redis_cluster.primary_of(keys.stream("cnn"))
    target = next(n for n in own_redis_cluster.primaries() if n.port != source.port)
    moved: list[int] = []

    async def migrate() -> None:
        moved.append(await asyncio.to_thread(
            own_redis_cluster.migrate_slot, keys.stream("cnn"), target))

    try:
        load = await under_load(cluster.target, migrate)
        ledger = settled_ledger(cluster, own_redis_cluster)
        assert own_redis_cluster.primary_of(keys.stream("cnn")).port == target.port
    finally:
        stop_cluster(cluster)
    print(f"\n[fault redis slot migrated under load] {load.line(ledger)}; {moved[0]} keys "
          f"moved from port {source.port} to {target.port}")
    assert len(load.acknowledged) > 50 and load.answered[0] > 0 and moved[0] > 0
    assert ledger.duplicated == 0 and ledger.lost == 0, ledger
    assert not load.missing, f"acknowledged jobs lost: {sorted(load.missing)[:5]}"
    assert load.states["SUCCEEDED"] == len(load.acknowledged), load.states


def _wait_promoted(server: RedisClusterServer, key: str, dead_port: int) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):  # still failing over
            if server.primary_of(key).port != dead_port:
                return time.monotonic()
        time.sleep(0.1)
    raise AssertionError("no replica took over the killed primary's slots in 30 s")


async def _outcomes(client: maas.AsyncClient,
                    acknowledged: dict[str, str]) -> tuple[Counter[str], set[str]]:
    """Each acknowledged job's final state; the ids the cluster no longer knows."""
    states: Counter[str] = Counter()
    missing: set[str] = set()
    for job_id in acknowledged:
        try:
            job = await client.wait_job(job_id, timeout_s=60)
        except errors.JobNotFound:
            missing.add(job_id)
            continue
        states[ipb.InferenceJob.State.Name(job.state)] += 1
    return states, missing
