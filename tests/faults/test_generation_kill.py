"""A worker SIGKILLed mid-generation: the job runs again on the other worker, and the client's
stream completes with every token exactly once, in order, the same tokens as a run that was
never interrupted (the request is seeded; the gateway skips the indices it already sent)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch
from safetensors.torch import save

import maas
from runtime.gpt_nn import GPT
from runtime.queue.v1.queue_pb2 import GenerateTask
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.redis_cluster import RedisClusterServer
from worker.generation import GenerationEngine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CONFIG = {"d_model": 32, "heads": 4, "layers": 2, "ff": 64, "max_len": 256}
SAMPLING = {"max_tokens": 240, "temperature": 1.0, "top_k": 50, "seed": 5}


def random_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(259, 32, 4, 2, 64, 256).eval()


def uninterrupted() -> list[int]:
    engine = GenerationEngine(random_gpt(), 1)
    engine.add("k", GenerateTask(prompt="x", **SAMPLING))  # type: ignore[arg-type]
    made: list[int] = []
    while engine.keys:
        for event in engine.step():
            made += event.token_ids
    return made


@pytest.fixture
def two_workers(tmp_path: Path, queue_redis: dict[str, RedisClusterServer],
                ) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path, workers=2, **queue_redis)
    yield cluster
    stop_cluster(cluster)


def owner(r: redis.Redis) -> str:
    """The worker running the one generation job of `adder`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for key in r.scan_iter("maas:{m:adder}:job:*"):
            if (who := r.hget(key, "owner")) and r.hget(key, "state") == b"RUNNING":
                return who.decode()
        time.sleep(0.01)
    raise AssertionError("no worker runs the generation")


def test_sigkill_mid_generation_delivers_every_token_once(two_workers: Cluster) -> None:
    r = two_workers.redis.client()
    with maas.Client(two_workers.target, timeout_s=60) as client:
        client.register_model("adder", "gpt", save(random_gpt().state_dict()), CONFIG)
        chunks = []
        for chunk in client.generate("adder", "x", **SAMPLING):  # type: ignore[arg-type]
            chunks.append(chunk)
            if chunk.index == 10:
                victim = two_workers.service(owner(r))
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
    indices = [c.index for c in chunks if c.token_ids]
    ids = [t for c in chunks for t in c.token_ids]
    assert indices == sorted(set(indices))  # in order, none twice
    assert ids == uninterrupted()
    assert chunks[-1].finish_reason in ("length", "eos")
    assert chunks[-1].completion_tokens == len(ids)
    assert chunks[-1].attempts == 2  # the kill landed mid-generation
