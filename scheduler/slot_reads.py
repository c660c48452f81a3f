"""A worker's blocking read of several models on a Redis Cluster.

Each model's streams live in the model's slot, and one XREADGROUP may not name keys of
several slots, so on a cluster a worker waits on one read per model at once. A read that is
still blocking when another returns keeps running and is taken up by the next call: a read
whose reply arrived is never dropped (its entries would sit unstarted in the pending list
until REAP reclaims them, a lost lease). On one Redis, one XREADGROUP names every model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from runtime.cancel import cancel_and_wait
from scheduler.job_types import Delivery


class SlotReads:
    def __init__(self) -> None:
        self._reads: dict[str, asyncio.Task[list[Delivery]]] = {}

    async def read(self, models: Sequence[str],
                   read_one: Callable[[str], Awaitable[list[Delivery]]]) -> list[Delivery]:
        """Deliveries of `models`: what the reads that ended hold, once at least one has
        ended. Reads of models not asked for now stay in hand until they are asked for."""
        for model in models:
            if model not in self._reads:
                self._reads[model] = asyncio.ensure_future(read_one(model))
        await asyncio.wait([self._reads[m] for m in models],
                           return_when=asyncio.FIRST_COMPLETED)
        found: list[Delivery] = []
        failure: BaseException | None = None
        for model in models:
            task = self._reads[model]
            if not task.done():
                continue
            del self._reads[model]
            if task.exception() is None:
                found += task.result()
            else:
                failure = failure or task.exception()
        if failure is not None and not found:  # with something read, the error is dropped:
            raise failure                      # the next read meets it again if it lasts
        return found

    async def stop(self) -> None:
        """Cancels the reads in flight (at a worker's stop)."""
        await cancel_and_wait(*self._reads.values())
        self._reads.clear()
