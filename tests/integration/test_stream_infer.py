"""Triton's ModelStreamInfer through the unmodified tritonclient: pipelining, in-band errors,
half-close, cancellation and backpressure (a real gateway, Redis and worker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import tritonclient.grpc as grpcclient
from safetensors.torch import save

from gateway.streaming import MAX_IN_FLIGHT
from maas.client import Client
from scheduler import keys
from tests.inprocess import running_gateway
from tests.inprocess_worker import running_worker
from tests.models import reference_model, run_reference

N_REQUESTS = 200


class Collected:
    """What tritonclient's stream callback received (it runs in tritonclient's thread)."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.count = 0

    def callback(self, result: Any, error: Any) -> None:
        with self.lock:
            if error is not None:
                self.errors.append(str(error))
            else:
                self.results[result.get_response().id] = result
            self.count += 1


def register_mlp(target: str) -> None:
    with Client(target) as client:
        client.register_model("mlp", "mlp", save(reference_model("mlp").state_dict()))


@pytest.fixture
def gateway(redis_url: str, tmp_path: Path) -> Iterator[str]:
    with running_gateway(redis_url, tmp_path) as port:
        target = f"127.0.0.1:{port}"
        register_mlp(target)
        yield target


def _input(x: np.ndarray, name: str = "input") -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, list(x.shape), "FP32" if x.dtype == np.float32 else "FP64")
    inp.set_data_from_numpy(x)
    return inp


def _bad(i: int) -> tuple[str, list[grpcclient.InferInput]]:
    """(model, inputs) of a request that fails validation in one of three ways."""
    kind = i % 3
    if kind == 0:
        return "mlp", [_input(np.zeros((1, 63), np.float32))]  # wrong shape
    if kind == 1:
        return "mlp", [_input(np.zeros((1, 64), np.float64))]  # wrong datatype
    return "no-such-model", [_input(np.zeros((1, 64), np.float32))]


def test_pipelined_requests_answered_with_errors_in_band(gateway: str, redis_url: str,
                                                         tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    xs = {f"r{i}": rng.random((1 + i % 3, 64), dtype=np.float32) for i in range(N_REQUESTS)}
    bad = {f"r{i}" for i in range(5, N_REQUESTS, 10)}
    got = Collected()
    client = grpcclient.InferenceServerClient(gateway)
    with running_worker(redis_url, tmp_path):
        client.start_stream(callback=partial(Collected.callback, got))
        started = time.perf_counter()
        for i, (rid, x) in enumerate(xs.items()):
            model, inputs = _bad(i) if rid in bad else ("mlp", [_input(x)])
            client.async_stream_infer(model, inputs, request_id=rid)
        client.stop_stream()  # half-close: returns once every request is answered
        elapsed_s = time.perf_counter() - started
    client.close()
    assert got.count == N_REQUESTS
    assert set(got.results) == set(xs) - bad
    reference = reference_model("mlp")
    for rid, result in got.results.items():
        np.testing.assert_allclose(result.as_numpy("output"), run_reference(reference, xs[rid]),
                                   rtol=1e-5, atol=1e-5)
    # Every error names its request, its gRPC code and what was wrong.
    assert len(got.errors) == len(bad)
    for rid in bad:
        [message] = [e for e in got.errors if f"(request id '{rid}')" in e]
        assert message.split(":")[0] in ("INVALID_ARGUMENT", "NOT_FOUND"), message
    assert any("no-such-model" in e for e in got.errors)
    # Pipelined, not one at a time: the worker ran requests of the stream together.
    batch_sizes = [r.get_response().parameters["maas_batch_size"].int64_param
                   for r in got.results.values()]
    assert max(batch_sizes) > 1, batch_sizes
    print(f"{N_REQUESTS} requests on one stream in {elapsed_s:.3f}s, "
          f"largest batch {max(batch_sizes)}")


def _jobs(redis_url: str) -> list[dict[Any, Any]]:
    """The queued jobs of mlp: each entry's job hash (a synchronous call's job is lean: it has
    none until it is cancelled, when a cancel mark names its state)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return [client.hgetall(keys.job("mlp", fields[b"job"].decode()))
                for level in keys.LEVELS for _, fields in client.xrange(keys.stream("mlp", level))]
    finally:
        client.close()


def _wait_for(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_backpressure_then_cancel_ends_the_queued_jobs(gateway: str, redis_url: str) -> None:
    """No worker: jobs stay queued. The gateway reads only MAX_IN_FLIGHT requests of the
    stream; cancelling the stream cancels every one of their jobs."""
    got = Collected()
    client = grpcclient.InferenceServerClient(gateway)
    client.start_stream(callback=partial(Collected.callback, got))
    x = np.zeros((1, 64), np.float32)
    for i in range(MAX_IN_FLIGHT + 50):
        client.async_stream_infer("mlp", [_input(x)], request_id=f"c{i}")
    _wait_for(lambda: len(_jobs(redis_url)) >= MAX_IN_FLIGHT)
    time.sleep(0.5)  # had the gateway read more, their jobs would be queued by now
    assert len(_jobs(redis_url)) == MAX_IN_FLIGHT
    client.stop_stream(cancel_requests=True)
    client.close()
    _wait_for(lambda: all(j.get(b"state") == b"CANCELLED" for j in _jobs(redis_url)))
    assert got.results == {}
