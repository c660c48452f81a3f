"""Queue statistics of a model's streams, for the scheduler's metrics and for its reaper
(one round trip each).

Entries leave a stream when their job ends (COMPLETE/REAP delete them), so what is left is
queued (never delivered: the group's lag) or leased (the group's pending list), and the
first entry's id carries the time the oldest job still waiting for an answer entered the
stream (its submit, or its requeue after a lost lease). The reaper reads them first and
calls REAP and PROMOTE only when there is something to reclaim or to promote: an idle
cluster costs Redis one pipeline per model and pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from runtime import metrics
from scheduler import keys
from scheduler.queue import ReapCounts
from scheduler.workers import names


@dataclass(frozen=True)
class StreamStats:
    """A model's queued, leased and oldest entry over every priority stream (keys.LEVELS):
    a backlog of high or low jobs counts as much as one of normal jobs."""

    queued: int  # not yet read by any worker
    leased: int  # read, not yet completed: 0 = nothing to reap
    oldest_age_s: float  # of the oldest first entry of the streams; 0 when all are empty
    delayed: int = 0  # jobs waiting out a retry backoff: 0 = nothing to promote
    has_groups: bool = True  # False: a stream or its consumer group is missing

    @property
    def depth(self) -> int:
        return self.queued + self.leased

    @property
    def leased_all_levels(self) -> int:
        """Pending entries of every priority stream (the same as `leased`)."""
        return self.leased


async def stream_stats(client: aioredis.Redis, model: str) -> StreamStats:
    streams = [keys.stream(model, level) for level in keys.LEVELS]
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)  # an error when the stream is missing
        pipe.xlen(stream)
        pipe.xrange(stream, count=1)
    pipe.zcard(keys.delayed(model))
    *replies, delayed = await pipe.execute(raise_on_error=False)
    if isinstance(delayed, Exception):
        raise delayed
    queued = leased = 0
    age_s = 0.0
    found = []
    now_s = time.time()
    for groups, length, first in zip(replies[0::3], replies[1::3], replies[2::3], strict=True):
        for reply in (length, first):
            if isinstance(reply, Exception):
                raise reply
        group = group_row(groups)
        found.append(group)
        pending = int(group["pending"]) if group else 0
        lag = group.get("lag") if group else None
        # lag is unknown (None) after deletions Redis cannot account for: count what is left.
        queued += int(lag) if lag is not None else max(0, int(length) - pending)
        leased += pending
        if first:
            entry_ms = int(as_text(first[0][0]).split("-")[0])
            age_s = max(age_s, now_s - entry_ms / 1000)
    return StreamStats(queued, leased, age_s, delayed=int(delayed), has_groups=all(found))


def group_row(groups: Any) -> dict[str, Any] | None:
    """The workers' consumer group's row of an XINFO GROUPS reply (or of the error it gave in
    a pipeline); None when the group (or its stream) is missing."""
    if isinstance(groups, Exception):
        return None
    return next((g for g in groups if as_text(g["name"]) == keys.GROUP), None)


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def training_replicas(client: aioredis.Redis, limit: int = 10_000) -> int:
    """The workers the training jobs in the stream (queued or running) ask for: the sum of
    their `replicas` (a gang of N needs N workers at once)."""
    entries = await client.xrange(keys.stream(keys.TRAINING_QUEUE), count=limit)
    if not entries:
        return 0
    pipe = client.pipeline(transaction=False)
    for _, fields in entries:
        job_id = as_text(cast("dict[bytes, bytes]", fields)[b"job"])
        pipe.hget(keys.job(keys.TRAINING_QUEUE, job_id), "replicas")
    return sum(max(int(r or 1), 1) for r in await pipe.execute())


class QueueGauges:
    """The queue gauges of one pass over every model, by label. Models that share a label
    (every tenant's `digits` when labels hide tenants) add up: depth summed, oldest age the
    largest, so no tenant's queue overwrites another's. And the one aggregate autoscalers
    read: the workers wanted (maas_workers_wanted)."""

    def __init__(self, max_batch_size: int = 32, pooled: Sequence[str] = ()) -> None:
        self._pooled = pooled  # MAAS_POOLED_MODELS: scaled by their own pools
        self._depth: dict[str, int] = {}
        self._oldest_age_s: dict[str, float] = {}
        self._batch = max(max_batch_size, 1)
        self._inference_jobs = 0
        self.training_workers = 0  # set by the pass: training_replicas()

    def add(self, model: str, label: str, stats: StreamStats) -> None:
        self._depth[label] = self._depth.get(label, 0) + stats.depth
        self._oldest_age_s[label] = max(self._oldest_age_s.get(label, 0.0), stats.oldest_age_s)
        if model != keys.TRAINING_QUEUE and not names(self._pooled, model):
            self._inference_jobs += stats.depth

    @property
    def workers_wanted(self) -> int:
        """Every worker serves every model unless pinned, so inference asks for one worker
        per full batch over all models but the pooled ones (at least one while any job
        waits)."""
        return -(-self._inference_jobs // self._batch) + self.training_workers

    def export(self) -> None:
        for label, depth in self._depth.items():
            metrics.QUEUE_DEPTH.labels(label).set(depth)
            metrics.QUEUE_OLDEST_AGE_SECONDS.labels(label).set(self._oldest_age_s[label])
        metrics.WORKERS_WANTED.set(self.workers_wanted)


def observe_stream(model: str, reaped: ReapCounts, stats: StreamStats,
                   gauges: QueueGauges) -> None:
    """Exports one model's reap counts; adds its stream statistics to the pass's gauges."""
    label = metrics.model_label(model)
    moved = reaped.requeued + reaped.expired + reaped.dead + reaped.dropped
    metrics.LEASES_RECLAIMED.labels(label).inc(moved)
    metrics.DEAD_LETTERS.labels(label).inc(reaped.dead)
    metrics.JOBS_EXPIRED.labels(label).inc(reaped.expired)
    gauges.add(model, label, stats)
    if model == keys.TRAINING_QUEUE:
        metrics.TRAINING_JOBS.labels("queued").set(stats.queued)
        metrics.TRAINING_JOBS.labels("running").set(stats.leased)
