"""Sharded model queues (MAAS_MODEL_SHARDS): one hot model's jobs spread over several queues.

A model's queue is one set of streams in one hash slot, so on a Redis Cluster one primary
carries every job of a model. Listed with N > 1, the model's inference jobs go to N queues
instead: its own (shard 0, the name unchanged, so turning sharding on strands nothing) and
`<model>#1` .. `<model>#<N-1>` (scheduler/keys.py), each with its own slot and so, on a
cluster, usually its own primary. Every queue is a whole queue (streams by priority, job
hashes, fencing, leases, dead letters, reply streams), so the scripts do not change: a job
lives and ends on the queue it was put on.

- Gateways pick a queue per job: a job with a request_id on the queue its key hashes to (a
  retry meets its first submit, so idempotency holds); a synchronous call's job on the queue
  of the gateway's next pipeline (its submits coalesce: one queue per pipeline, the queues
  in turn, so a pipeline stays one script call and a worker finds its jobs together); other
  jobs in turn. An asynchronous
  job's id names its queue (`<model>#<n>:<hex>`), so GetJob and cancel find it. Generation
  and Explain jobs stay on the model's own queue.
- Workers read and claim every queue of each model they serve, taking the queues of a
  model in turn so none starves; loading, batching and metrics are the model's.
- The scheduler reaps and promotes every queue and counts them together (queue depth,
  KEDA's series, `maas_workers_wanted`); queue statistics and dead letters (list, redrive)
  are the model's, over its queues.

Priorities are strict within a queue; across queues a worker takes them in turn, so a
high-priority job waits at most one batch per queue. A tenant's fair-share cap and queued
quota are divided among the queues (each queue gets its share, rounded up).

Every process must be given the same MAAS_MODEL_SHARDS. Raising N is safe at any time, with
one caveat: request_ids hash to queues by jump consistent hashing, so going from N to M moves
the keys of a share (M - N) / M to the new queues, and a request retried across the change
whose key moved may run twice (its first submit is on the old queue). Before lowering N, let
the queues about to go out of use drain (`maas queues stats`), or their jobs wait until N is
raised again.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping

from scheduler import keys


class Shards:
    """How many queues each model has; which one a job goes to."""

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self._counts = dict(counts or {})
        self._turns: dict[str, itertools.count[int]] = {}

    def count(self, model: str) -> int:
        """The model's number of queues: by its id, else by its name; 1 if not listed."""
        if not self._counts:
            return 1
        return self._counts.get(model) or self._counts.get(keys.split_model_id(model)[1], 1)

    def queues(self, model: str) -> list[str]:
        """Every queue of a model, its own first."""
        return [keys.shard_queue(model, n) for n in range(self.count(model))]

    def expand(self, models: Iterable[str]) -> list[str]:
        """Every queue of each model, in order."""
        return [q for m in models for q in self.queues(m)]

    def pick(self, model: str, key: str = "", turn: int | None = None) -> str:
        """The queue a new job of the model goes to: by its idempotency key when it has one
        (the same key, the same queue); else by `turn` when given (the caller's count of
        something that jobs going together share, e.g. a gateway's pipelines), else the
        next one in turn."""
        count = self.count(model)
        if count == 1:
            return model
        if key:
            shard = jump_hash(key, count)
        elif turn is not None:
            shard = turn % count
        else:
            shard = next(self._turns.setdefault(model, itertools.count())) % count
        return keys.shard_queue(model, shard)

    def split_cap(self, model: str, cap: int) -> int:
        """A per-model tenant cap (fair share, queued quota) as each of its queues applies it:
        divided among the queues, rounded up; 0 (none) stays 0."""
        count = self.count(model)
        return cap if count == 1 or cap <= 0 else -(-cap // count)


def jump_hash(key: str, buckets: int) -> int:
    """The bucket (0 .. buckets - 1) of a key by jump consistent hashing (Lamping and Veach,
    2014): when `buckets` grows from N to M, only the keys that land in the new buckets move
    (a share (M - N) / M), never from one old bucket to another."""
    state = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    bucket, j = -1, 0
    while j < buckets:
        bucket = j
        state = (state * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((bucket + 1) * ((1 << 31) / ((state >> 33) + 1)))
    return bucket
