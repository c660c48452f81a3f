"""Gang leases of data-parallel training jobs: N worker slots, all or none, atomic in Lua.

A job of `replicas` N > 1 is read from the training queue like any other; TRAIN_START makes
its reader rank 0 of a forming gang (the job stays QUEUED) instead of starting it. Other
workers with a free training slot take ranks 1..N-1 (GANG_JOIN); the worker that fills the
last rank forms the gang, and the job becomes RUNNING with attempt + 1 as the gang's
generation. A gang not formed by its deadline is released by rank 0 (GANG_ABORT) and the job
waits in the queue again, its status message saying why. Each rank renews its own lease
(GANG_BEAT); one rank silent for a lease breaks the gang, every rank stops, and rank 0 hands
the job back to re-form and resume from its last checkpoint. See docs/distributed-training.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from runtime.queue.v1.queue_pb2 import JobEnvelope
from scheduler import keys
from scheduler.queue import Delivery
from scheduler.scripts import register

Q = keys.TRAINING_QUEUE


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class TrainStart:
    """What TRAIN_START did with a delivery (status: RUN, FORMING, REQUEUED, SKIP, ...)."""

    delivery: Delivery
    status: str
    attempt: int
    envelope: JobEnvelope | None
    replicas: int


@dataclass(frozen=True)
class GangSeat:
    """A worker's rank in a gang; gen (the job's attempt) is 0 while the gang forms."""

    job_id: str
    rank: int
    size: int
    gen: int
    envelope: JobEnvelope


@dataclass(frozen=True)
class GangView:
    state: str  # FORMING, FORMED, BROKEN, or "" when the gang is gone
    gen: int
    addr: str
    deadline_ms: int
    rank0: str
    entry: str


class GangStore:
    def __init__(self, client: aioredis.Redis, *, timeout_s: float, lease_ms: int,
                 result_ttl_ms: int) -> None:
        self._redis = client
        self.timeout_ms = int(timeout_s * 1000)
        self.lease_ms = lease_ms
        self._ttl_ms = self.timeout_ms + 2 * lease_ms  # a gang nobody beats goes away
        self._result_ttl_ms = result_ttl_ms
        self._start = register(client, "train_start")
        self._join = register(client, "train_gang_join")
        self._abort = register(client, "train_gang_abort")
        self._beat = register(client, "train_gang_beat")
        self._end = register(client, "train_gang_end")

    async def start(self, consumer: str, delivery: Delivery) -> TrainStart:
        """TRAIN_START of a delivery read from the training queue."""
        status, attempt, env, replicas = await self._start(
            keys=[delivery.stream, keys.dead_letters(Q), keys.job(Q, delivery.job_id),
                  keys.training_gang(delivery.job_id), keys.training_forming(),
                  *keys.queue_keys(Q)],
            args=[keys.GROUP, consumer, self._result_ttl_ms, delivery.entry_id,
                  delivery.job_id, self.timeout_ms, self._ttl_ms])
        envelope = JobEnvelope.FromString(env) if env else None
        return TrainStart(delivery, _s(status), int(attempt), envelope, int(replicas))

    async def join(self, consumer: str) -> GangSeat | None:
        """A rank in the gang that is forming, or None when there is none to join."""
        row: list[Any] = await self._join(
            keys=[keys.training_forming(), keys.training_gang(""), keys.job(Q, "")],
            args=[consumer, self._ttl_ms])
        if not row:
            return None
        job_id, rank, size, _state, gen, env = row
        return GangSeat(_s(job_id), int(rank), int(size), int(gen), JobEnvelope.FromString(env))

    async def abort(self, consumer: str, delivery: Delivery) -> bool:
        """Rank 0 releases a gang that did not form in time; True when it formed after all."""
        outcome = await self._abort(
            keys=[delivery.stream, keys.job(Q, delivery.job_id),
                  keys.training_gang(delivery.job_id), keys.training_forming()],
            args=[keys.GROUP, consumer, delivery.entry_id, delivery.job_id,
                  f"{self.timeout_ms / 1000:g}"])
        return _s(outcome) == "FORMED"

    async def view(self, job_id: str) -> GangView:
        f = await self._redis.hmget(keys.training_gang(job_id), "state", "gen", "addr",
                                    "deadline_ms", "rank:0", "entry")
        state, gen, addr, deadline, rank0, entry = (_s(v) if v is not None else "" for v in f)
        return GangView(state, int(gen or 0), addr, int(deadline or 0), rank0, entry)

    async def beat(self, seat: GangSeat, consumer: str, addr: str = "",
                   is_broken: bool = False) -> tuple[str, str]:
        """Renews this rank's lease; (state, rendezvous address). is_broken=True breaks it."""
        state, found = await self._beat(
            keys=[keys.training_gang(seat.job_id)],
            args=[seat.gen, seat.rank, consumer, self.lease_ms, self._ttl_ms, addr,
                  int(is_broken)])
        return _s(state), _s(found)

    async def end(self, seat: GangSeat, consumer: str) -> bool:
        return bool(await self._end(keys=[keys.training_gang(seat.job_id)],
                                    args=[seat.gen, consumer]))
