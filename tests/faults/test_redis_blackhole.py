"""Fault 5: Redis unreachable for twice the lease (a TCP proxy that blackholes: silence, no
reset), then back. Every process survives, no call hangs past its deadline (calls waiting on
Redis are answered UNAVAILABLE as their deadline comes), and once the network heals every
accepted job ends exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

import maas
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.faults.tcp_proxy import BlackholeProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

LEASE_S = 1.0
CALL_TIMEOUT_S = 1.5  # shorter than the outage: these calls must end, not hang


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Cluster, BlackholeProxy]]:
    proxies: list[BlackholeProxy] = []

    def through_proxy(server: object) -> str:
        proxies.append(BlackholeProxy(server.port).start())  # type: ignore[attr-defined]
        return proxies[0].url

    cluster = start_cluster(tmp_path, workers=2, redis_url_for=through_proxy,
                            infer_lease_ms=str(int(LEASE_S * 1000)), retry_backoff_ms="100")
    yield cluster, proxies[0]
    proxies[0].restore()
    stop_cluster(cluster)
    proxies[0].stop()


def test_redis_blackholed_for_two_leases_then_back(
        proxied: tuple[Cluster, BlackholeProxy]) -> None:
    cluster, proxy = proxied
    outcomes: Counter[str] = Counter()
    slowest_s = 0.0
    stop = threading.Event()
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)

    def load() -> None:
        nonlocal slowest_s
        with maas.Client(cluster.target) as client:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    client.infer("cnn", {"input": x}, timeout_s=CALL_TIMEOUT_S)
                    outcomes["ok"] += 1
                except maas.MaasError as exc:
                    outcomes[exc.code.name] += 1
                slowest_s = max(slowest_s, time.monotonic() - began)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    before = outcomes["ok"]
    proxy.blackhole()
    time.sleep(2 * LEASE_S)
    proxy.restore()
    healed = time.monotonic()
    while outcomes["ok"] < before + 50 and time.monotonic() - healed < 30:
        time.sleep(0.1)
    recovered_s = time.monotonic() - healed
    stop.set()
    for t in threads:
        t.join(30)
    print(f"\nblackhole {2 * LEASE_S:.0f}s: calls {dict(outcomes)}, slowest {slowest_s:.2f}s, "
          f"50 more answers {recovered_s:.1f}s after it healed")
    assert outcomes["ok"] >= before + 50, "no recovery after the network healed"
    assert set(outcomes) <= {"ok", grpc.StatusCode.DEADLINE_EXCEEDED.name,
                             grpc.StatusCode.UNAVAILABLE.name}, outcomes
    # Calls that waited on the silent Redis are told so (UNAVAILABLE: retry), before their
    # deadline; only those whose deadline came within a read period of the outage's start
    # may see DEADLINE_EXCEEDED.
    assert outcomes[grpc.StatusCode.UNAVAILABLE.name] >= 1, outcomes
    assert slowest_s < CALL_TIMEOUT_S + 1.0, "a call outlived its deadline"
    for s in cluster.local.services:
        assert s.proc is not None and s.proc.poll() is None, f"{s.name} died"
    check(cluster.redis.url, "5 redis blackhole", ["cnn"])
