"""Consumer: a worker's side of the queue: read, start (or claim: both at once), renew,
complete and hand back jobs. Leases and fencing: queue_core.py and docs/queue-protocol.md."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from runtime.queue.v1.queue_pb2 import JobResult, JobState
from scheduler import keys
from scheduler.connection import is_cluster, read_streams
from scheduler.job_types import Delivery, StartOutcome, by_level
from scheduler.queue_core import QueueCore, _s
from scheduler.redis_types import GroupStreams


class Consumer(QueueCore):
    async def read(self, consumer: str, queues: Sequence[str], count: int,
                   block_ms: int | None) -> list[Delivery]:
        """New entries of the given queues (models, or shards of models: scheduler/shards.py),
        up to `count` per queue, blocking up to block_ms. On a Redis Cluster, one read per
        queue (its slot: scheduler/slot_reads.py)."""
        if not queues:
            return []
        if len(queues) > 1 and is_cluster(self._redis):
            return await self._slot_reads.read(
                queues, lambda q: self._read(consumer, [q], count, block_ms))
        return await self._read(consumer, queues, count, block_ms)

    async def stop_reads(self) -> None:
        """Ends the reads still blocking (a worker's stop)."""
        await self._slot_reads.stop()

    async def _read(self, consumer: str, queues: Sequence[str], count: int,
                    block_ms: int | None) -> list[Delivery]:
        by_stream = {keys.stream(q, level): (q, level) for q in queues for level in keys.LEVELS}
        reply = cast("GroupStreams | None", await read_streams(
            self._redis, dict.fromkeys(by_stream, ">"), count=count, block_ms=block_ms,
            group=(keys.GROUP, consumer)))
        found = []
        for stream, entries in reply or []:
            queue, level = by_stream[_s(stream)]
            model = keys.model_of_queue(queue)
            found += [Delivery(model, _s(entry_id), _s(fields[b"job"]), level,
                               queue=keys.queue_field(model, queue))
                      for entry_id, fields in entries if fields]
        return found

    async def start(self, consumer: str, deliveries: Sequence[Delivery]) -> StartOutcome:
        """Runs START for deliveries (one call per stream: queue and priority)."""
        outcome = StartOutcome()
        for group in by_level(deliveries, lambda d: d).values():
            queue = group[0].queue_name
            args: list[str | int] = [keys.GROUP, consumer, self._result_ttl_ms]
            for d in group:
                args += [d.entry_id, d.job_id]
            rows = await self._scripts.start(
                keys=[group[0].stream, keys.dead_letters(queue), *keys.queue_keys(queue),
                      *(keys.job(queue, d.job_id) for d in group)],
                args=args)
            for d, (status, attempt, env) in zip(group, rows, strict=True):
                outcome.add(d, _s(status), int(attempt), env)
        return outcome

    async def claim(self, consumer: str, queue: str, count: int) -> StartOutcome:
        """Reads up to `count` new entries of a queue (a model's, or one of its shards) and
        starts them: one round trip."""
        rows = await self._scripts.claim(
            keys=[*keys.queue_keys(queue), keys.dead_letters(queue)],
            args=[keys.GROUP, consumer, self._result_ttl_ms, count])
        outcome = StartOutcome()
        model = keys.model_of_queue(queue)
        shard = keys.queue_field(model, queue)
        for status, attempt, env, entry_id, job_id, level in rows:
            delivery = Delivery(model, _s(entry_id), _s(job_id), keys.LEVELS[int(level) - 1],
                                queue=shard)
            outcome.add(delivery, _s(status), int(attempt), env)
        return outcome

    async def extend(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Renews leases (one call per stream); returns the deliveries it lost."""
        lost: list[Delivery] = []
        for group in by_level(deliveries, lambda d: d).values():
            by_entry = {d.entry_id: d for d in group}
            gone = await self._scripts.extend(
                keys=[group[0].stream], args=[keys.GROUP, consumer, *by_entry])
            lost += [by_entry[_s(e)] for e in gone]
        return lost

    async def complete(self, consumer: str,
                       results: Sequence[tuple[Delivery, JobResult]]) -> list[bool]:
        """Records the outcome of jobs (one script call per stream: queue and priority);
        False = lease lost, the result was dropped."""
        recorded: dict[tuple[str, str], bool] = {}
        for group in by_level(results, lambda r: r[0]).values():
            queue = group[0][0].queue_name
            args: list[str | int | bytes] = [keys.GROUP, consumer, self._result_ttl_ms]
            for d, result in group:
                args += [d.entry_id, d.job_id, JobState.Name(result.state)[len("JOB_STATE_"):],
                         result.SerializeToString(), d.reply_to]
            flags = await self._scripts.complete(
                keys=[group[0][0].stream, *(keys.job(queue, d.job_id) for d, _ in group)],
                args=args)
            recorded.update(((d.stream, d.entry_id), bool(f))
                            for (d, _), f in zip(group, flags, strict=True))
        return [recorded[d.stream, d.entry_id] for d, _ in results]

    async def release(self, consumer: str, delivery: Delivery, *, refund: bool) -> bool:
        """Hands a held job back to the queue; refund=True does not count the attempt."""
        done = await self._scripts.release(
            keys=[delivery.stream, keys.job(delivery.queue_name, delivery.job_id),
                  *keys.queue_keys(delivery.queue_name)],
            args=[keys.GROUP, consumer, delivery.entry_id, int(refund), delivery.job_id,
                  int(bool(delivery.reply_to))])
        return bool(done)
