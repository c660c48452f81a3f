"""ModelStreamInfer obeys keys and limits while it is open: a revoked key ends the stream
with UNAUTHENTICATED, and every request on it counts against the tenant's rate limit
(unmodified tritonclient against a real gateway and redis-server; no worker, so accepted
requests stay queued)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import tritonclient.grpc as grpcclient

import maas
from maas.api_keys import ensure_key_file
from scheduler import keys
from tests.inprocess import mlp_weights, running_gateway

pytestmark = pytest.mark.timeout(60)


class Errors:
    """The errors tritonclient's stream callback received (it runs in tritonclient's
    thread), with when each came."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def callback(self, result: Any, error: Any) -> None:
        if error is not None:
            with self.lock:
                self.seen.append((time.monotonic(), str(error)))

    def wait(self, count: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < count:
            assert time.monotonic() < deadline, f"{len(self.seen)} errors, not {count}"
            time.sleep(0.02)


def _input() -> grpcclient.InferInput:
    inp = grpcclient.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
    return inp


def start(key_file: Path, redis_url: str, tmp_path: Path, **settings: object
          ) -> Iterator[tuple[str, str]]:
    admin_key = ensure_key_file(key_file)
    with running_gateway(redis_url, tmp_path / "data", auth="on",
                         admin_key_file=str(key_file), **settings) as port:
        target = f"127.0.0.1:{port}"
        with maas.Client(target, api_key=admin_key) as admin:
            admin.register_model("mlp", "mlp", mlp_weights(), shared=True)
        yield target, admin_key


@pytest.fixture
def secured(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield from start(tmp_path / "admin.key", redis_url, tmp_path)


@pytest.fixture
def limited(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield from start(tmp_path / "admin.key", redis_url, tmp_path, tenant_rate_per_s=1.0)


def _job_states(redis_url: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [client.hget(k, "state") for k in client.scan_iter(keys.job("mlp", "*"))]
    finally:
        client.close()


def test_a_stream_ends_within_a_second_of_its_key_revoked(secured: tuple[str, str],
                                                          redis_url: str) -> None:
    target, admin_key = secured
    with maas.Client(target, api_key=admin_key) as admin:
        made = admin.create_key("acme", ["infer"])
        errors = Errors()
        client = grpcclient.InferenceServerClient(target)
        client.start_stream(callback=errors.callback,
                            headers={"authorization": f"Bearer {made.api_key}"})
        client.async_stream_infer("mlp", [_input()], request_id="queued")
        deadline = time.monotonic() + 10
        while len(_job_states(redis_url)) < 1:  # the request is read, its job queued
            assert time.monotonic() < deadline
            time.sleep(0.05)
        admin.revoke_key(made.key.key_id)
        revoked_at = time.monotonic()
    errors.wait(1)
    client.stop_stream()
    client.close()
    [(ended_at, message)] = errors.seen
    assert "UNAUTHENTICATED" in message and "revoked" in message, message
    assert ended_at - revoked_at < 1.5, f"ended {ended_at - revoked_at:.2f}s after the revoke"
    deadline = time.monotonic() + 10
    while _job_states(redis_url) != [b"CANCELLED"]:  # its queued job never runs
        assert time.monotonic() < deadline, _job_states(redis_url)
        time.sleep(0.05)


def test_each_request_on_a_stream_counts_against_the_rate_limit(
        limited: tuple[str, str]) -> None:
    target, admin_key = limited
    time.sleep(1.0)  # admin registered the model just now: its token is back
    with maas.Client(target, api_key=admin_key) as admin:
        api_key = admin.create_key("acme", ["infer"]).api_key
    errors = Errors()
    client = grpcclient.InferenceServerClient(target)
    client.start_stream(callback=errors.callback,
                        headers={"authorization": f"Bearer {api_key}"})
    started = time.monotonic()
    for i in range(40):
        client.async_stream_infer("mlp", [_input()], request_id=f"r{i}")
    errors.wait(38 - int(time.monotonic() - started))  # at most a token a second more
    refused = list(errors.seen)
    client.stop_stream(cancel_requests=True)
    client.close()
    for _, message in refused:  # in-band: each names its request; the stream stayed up
        assert message.startswith("RESOURCE_EXHAUSTED"), message
        assert "MAAS_TENANT_RATE_PER_S" in message and "(request id 'r" in message, message
