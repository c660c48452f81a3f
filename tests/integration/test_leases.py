"""Leases under a closed loop: a worker that keeps up never loses one, and never says so.

A real gateway, worker and scheduler daemon (each on its own event loop in a thread) serve
callers that send their next request as soon as the last one returns. The lease is short, so
the heartbeat renews it many times while jobs complete around it: no job may be reclaimed
and run again (every attempt is 1), and no lease may be counted or logged as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY
from safetensors.torch import save

from maas.client import Client
from maas.settings import Settings
from scheduler import keys
from scheduler.daemon import Daemon
from tests.inprocess import running_gateway
from tests.inprocess_worker import running_worker
from tests.models import reference_model

pytestmark = pytest.mark.timeout(90)

LEASE = {"infer_lease_ms": 450}  # the heartbeat renews every 150 ms
CALLERS = 8
LOOP_S = 4.0


@contextlib.contextmanager
def running_daemon(redis_url: str, data_dir: Path) -> Iterator[Daemon]:
    """The scheduler daemon (the reaper) on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    daemon = Daemon(Settings(redis_url=redis_url, data_dir=data_dir, reaper_interval_ms=100,
                             **LEASE))  # type: ignore[arg-type]
    thread = threading.Thread(target=loop.run_until_complete, args=(daemon.run(),),
                              daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        loop.call_soon_threadsafe(daemon.stop)
        thread.join(30)
        loop.close()


def counted(name: str, model: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": model}) or 0.0


def closed_loop(target: str, seconds: float) -> int:
    """CALLERS threads, each sending its next request when the last returns; requests."""
    done: list[int] = []
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)

    def caller() -> None:
        n = 0
        with Client(target) as client:
            stop_at = time.monotonic() + seconds
            while time.monotonic() < stop_at:
                client.infer("mlp", {"input": x})
                n += 1
        done.append(n)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    assert len(done) == CALLERS, "a caller failed"
    return sum(done)


def attempts(redis_url: str) -> list[int]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [int(client.hget(k, "attempt") or 0)
                for k in client.scan_iter(keys.job("mlp", "*"), count=1000)]
    finally:
        client.close()


def test_a_closed_loop_loses_no_lease(redis_url: str, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    lost_before = counted("maas_worker_lost_leases_total", "mlp")
    reclaimed_before = counted("maas_leases_reclaimed_total", "mlp")
    with running_gateway(redis_url, tmp_path, **LEASE) as port, \
            running_worker(redis_url, tmp_path, **LEASE), \
            running_daemon(redis_url, tmp_path):
        target = f"127.0.0.1:{port}"
        with Client(target) as client:
            client.register_model("mlp", "mlp", save(reference_model("mlp").state_dict()))
        caplog.set_level(logging.INFO, logger="worker.loop")
        requests = closed_loop(target, LOOP_S)
    ran = attempts(redis_url)
    assert requests >= 50 and len(ran) == requests, (requests, len(ran))
    assert set(ran) == {1}, "jobs were reclaimed and run again"
    assert counted("maas_leases_reclaimed_total", "mlp") == reclaimed_before
    assert counted("maas_worker_lost_leases_total", "mlp") == lost_before
    warnings = [r.getMessage() for r in caplog.records if "lost the lease" in r.getMessage()]
    assert not warnings, warnings
