"""ReplyDispatcher on a real Redis: one reply stream per model (in the model's slot), a reader
per model while calls wait on it, readers that end when idle and start again where they
stopped — no reply written in between is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from gateway import replies as replies_module
from gateway.replies import ReplyDispatcher
from runtime.queue.v1.queue_pb2 import JobResult, JobState
from scheduler import keys
from scheduler.connection import connect
from scheduler.replies import ReplyStream

GATEWAY = "gw-test"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = connect(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
async def dispatcher(client: aioredis.Redis) -> AsyncIterator[ReplyDispatcher]:
    d = ReplyDispatcher(lambda model: ReplyStream(client, GATEWAY, model))
    running = asyncio.create_task(d.run())
    yield d
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert d.readers == 0


async def answer(client: aioredis.Redis, key: str, job_id: str) -> None:
    """What COMPLETE writes for a job that succeeded."""
    result = JobResult(job_id=job_id, state=JobState.JOB_STATE_SUCCEEDED)
    await client.xadd(key, {"job": job_id, "result": result.SerializeToString()})


def test_a_reply_stream_lives_in_its_models_slot() -> None:
    for model in ("cnn", "acme/digits", "_train"):
        assert key_slot(keys.reply_stream(model, GATEWAY).encode()) == key_slot(
            keys.job(model, "j").encode()) == key_slot(keys.stream(model).encode())
    assert keys.reply_stream("a", GATEWAY) != keys.reply_stream("b", GATEWAY)


async def test_each_model_is_answered_from_its_own_stream(
        client: aioredis.Redis, dispatcher: ReplyDispatcher) -> None:
    waits = {m: dispatcher.expect(f"job-{m}", m) for m in ("cnn", "mlp")}
    assert dispatcher.readers == 2 and dispatcher.waiting == 2
    for model in ("mlp", "cnn"):
        await answer(client, dispatcher.reply_key(model), f"job-{model}")
    for model, wait in waits.items():
        assert (await asyncio.wait_for(wait, 5)).job_id == f"job-{model}"
    assert dispatcher.waiting == 0


async def test_an_idle_reader_ends_and_the_next_call_misses_nothing(
        client: aioredis.Redis, dispatcher: ReplyDispatcher,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replies_module, "IDLE_S", 0.05)
    monkeypatch.setattr(replies_module, "BLOCK_MS", 100)
    first = dispatcher.expect("j1", "cnn")
    await answer(client, dispatcher.reply_key("cnn"), "j1")
    await asyncio.wait_for(first, 5)
    for _ in range(50):  # the reader's block ends, it finds no waiter: it ends
        if dispatcher.readers == 0:
            break
        await asyncio.sleep(0.05)
    assert dispatcher.readers == 0
    # A reply that arrives while no reader runs (a late retry's, say) and the reply of the
    # next call: the new reader reads on from where the last one stopped.
    await answer(client, dispatcher.reply_key("cnn"), "late")
    second = dispatcher.expect("j2", "cnn")
    await answer(client, dispatcher.reply_key("cnn"), "j2")
    assert (await asyncio.wait_for(second, 5)).job_id == "j2"
    assert dispatcher.is_reading("cnn")


async def test_a_forgotten_waiter_lets_its_reader_go(
        dispatcher: ReplyDispatcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replies_module, "IDLE_S", 0.05)
    monkeypatch.setattr(replies_module, "BLOCK_MS", 100)
    dispatcher.expect("j1", "cnn")
    await asyncio.sleep(0.3)
    assert dispatcher.readers == 1  # a call waits: its reader stays
    dispatcher.forget("j1")
    for _ in range(50):
        if dispatcher.readers == 0:
            break
        await asyncio.sleep(0.05)
    assert dispatcher.readers == 0 and dispatcher.waiting == 0
