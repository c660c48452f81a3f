"""SlotReads (scheduler/slot_reads.py): a worker's reads of several models on a Redis Cluster,
one per slot, none of whose replies is ever dropped."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.job_types import Delivery
from scheduler.slot_reads import SlotReads


def delivery(model: str, n: int) -> Delivery:
    return Delivery(model, f"{n}-0", f"job-{model}-{n}", "normal")


async def settle() -> None:
    """Lets the tasks just made run up to their next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


class Reads:
    """Each model's read waits until the test releases it with what it returns."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.replies: dict[str, asyncio.Future[list[Delivery]]] = {}

    def release(self, model: str, value: list[Delivery] | BaseException) -> None:
        if isinstance(value, BaseException):
            self.replies[model].set_exception(value)
        else:
            self.replies[model].set_result(value)

    async def read_one(self, model: str) -> list[Delivery]:
        self.started.append(model)
        self.replies[model] = asyncio.get_running_loop().create_future()
        return await self.replies[model]


async def test_a_read_still_blocking_is_kept_for_the_next_call() -> None:
    reads, slots = Reads(), SlotReads()
    first = asyncio.ensure_future(slots.read(["a", "b"], reads.read_one))
    await settle()
    reads.release("a", [delivery("a", 1)])
    assert await first == [delivery("a", 1)]
    # b's read goes on; the next call starts a new read for a only, and b's reply, when it
    # comes, is returned then: nothing read is dropped.
    second = asyncio.ensure_future(slots.read(["a", "b"], reads.read_one))
    await settle()
    assert reads.started == ["a", "b", "a"]
    reads.release("b", [delivery("b", 1), delivery("b", 2)])
    assert await second == [delivery("b", 1), delivery("b", 2)]
    await slots.stop()


async def test_a_reply_for_a_model_not_asked_for_now_waits_until_it_is() -> None:
    reads, slots = Reads(), SlotReads()
    first = asyncio.ensure_future(slots.read(["a", "b"], reads.read_one))
    await settle()
    reads.release("a", [])
    assert await first == []
    reads.release("b", [delivery("b", 1)])  # arrives while only "a" is free to read
    second = asyncio.ensure_future(slots.read(["a"], reads.read_one))
    await settle()
    reads.release("a", [delivery("a", 2)])
    assert await second == [delivery("a", 2)]
    assert await slots.read(["b"], reads.read_one) == [delivery("b", 1)]
    await slots.stop()


async def test_an_error_is_raised_only_when_nothing_was_read() -> None:
    reads, slots = Reads(), SlotReads()
    call = asyncio.ensure_future(slots.read(["a"], reads.read_one))
    await settle()
    reads.release("a", ConnectionError("away"))
    with pytest.raises(ConnectionError):
        await call
    both = asyncio.ensure_future(slots.read(["a", "b"], reads.read_one))
    await settle()
    reads.release("a", ConnectionError("away"))
    reads.release("b", [delivery("b", 1)])
    await settle()
    assert await both == [delivery("b", 1)]
    await slots.stop()


async def test_stop_ends_the_reads_in_flight() -> None:
    reads, slots = Reads(), SlotReads()
    call = asyncio.ensure_future(slots.read(["a", "b"], reads.read_one))
    await settle()
    call.cancel()
    await slots.stop()
    assert all(f.cancelled() for f in reads.replies.values())
