"""What a model's queue holds now, by priority level, for the public API (QueueService
.GetQueueStats) — read-only, one pipeline (one round trip; every key is in the model's slot).

Per level (keys.LEVELS), from the stream and its consumer group (Redis 7 XINFO GROUPS):
`waiting` is the group's lag (entries never delivered), `leased` its pending entries (delivered,
not yet completed: COMPLETE and REAP delete an entry when its job ends), `delivered_total` its
`entries-read` (a counter that only grows, so a client takes throughput from two reads), and the
first entry's id carries when the oldest job still in the stream entered it. Beside them: the
asking tenant's fair-share backlog at that level, the dead letters and the delayed retries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from scheduler import keys
from scheduler.stats import as_text, group_row


@dataclass(frozen=True)
class LevelStats:
    """One priority stream of a model."""

    level: str  # one of keys.LEVELS
    waiting: int  # never delivered to a worker
    leased: int  # delivered, not yet completed
    oldest_age_s: float  # of the stream's first entry; 0 when the stream is empty
    delivered_total: int  # entries-read of the group; 0 when Redis cannot tell
    tenant_backlog: int  # the asking tenant's jobs over its fair share, not yet in the stream


@dataclass(frozen=True)
class QueueStats:
    """A model's queue, read at `read_unix_ms`."""

    model: str  # its id
    levels: tuple[LevelStats, ...]  # high, normal, low
    dead_letters: int
    delayed: int
    read_unix_ms: int

    @property
    def waiting(self) -> int:
        return sum(level.waiting for level in self.levels)

    @property
    def leased(self) -> int:
        return sum(level.leased for level in self.levels)


def merged(queues: list[QueueStats]) -> QueueStats:
    """The statistics of a sharded model's queues (scheduler/shards.py) as one queue's: counts
    added up, the oldest entry the oldest of any queue, named by the model."""
    first = queues[0]
    if len(queues) == 1:
        return first
    levels = tuple(
        LevelStats(level[0].level, sum(s.waiting for s in level), sum(s.leased for s in level),
                   max(s.oldest_age_s for s in level), sum(s.delivered_total for s in level),
                   sum(s.tenant_backlog for s in level))
        for level in zip(*(q.levels for q in queues), strict=True))
    return QueueStats(keys.model_of_queue(first.model), levels,
                      sum(q.dead_letters for q in queues), sum(q.delayed for q in queues),
                      max(q.read_unix_ms for q in queues))


async def read_queue_stats(client: aioredis.Redis, model: str, tenant: str) -> QueueStats:
    """The queue of the model with id `model`, with `tenant`'s backlog (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for level in keys.LEVELS:
        stream = keys.stream(model, level)
        pipe.xinfo_groups(stream)  # an error when the stream is missing: no group, all zero
        pipe.xlen(stream)
        pipe.xrange(stream, count=1)
        pipe.llen(keys.backlog(model, level, tenant))
    pipe.xlen(keys.dead_letters(model))
    pipe.zcard(keys.delayed(model))
    *replies, dead, delayed = await pipe.execute(raise_on_error=False)
    now_ms = int(time.time() * 1000)
    levels = tuple(_level(level, replies[4 * i:4 * i + 4], now_ms)
                   for i, level in enumerate(keys.LEVELS))
    return QueueStats(model, levels, int(_ok(dead)), int(_ok(delayed)), now_ms)


def _level(level: str, replies: list[Any], now_ms: int) -> LevelStats:
    groups, length, first, backlog = replies
    group = group_row(groups)
    pending = int(group["pending"]) if group else 0
    lag = group.get("lag") if group else None
    # lag is unknown (None) after deletions Redis cannot account for: count what is left.
    waiting = int(lag) if lag is not None else max(0, int(_ok(length)) - pending)
    read = group.get("entries-read") if group else None
    entries = _ok(first)
    age_s = 0.0
    if entries:
        entry_ms = int(as_text(entries[0][0]).split("-")[0])
        age_s = max(0.0, (now_ms - entry_ms) / 1000)
    return LevelStats(level, waiting, pending, age_s, int(read or 0), int(_ok(backlog)))


def _ok(reply: Any) -> Any:
    """A pipeline reply, raised when it is an error."""
    if isinstance(reply, Exception):
        raise reply
    return reply
