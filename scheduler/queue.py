"""JobQueue: submit, read, start, extend, complete and reap jobs on per-model Redis streams.

A job hash is the source of truth; a stream entry only carries the job id. A lease is the
entry's pending-list ownership, renewed by the worker's heartbeat (EXTEND) and reclaimed by
the scheduler daemon (REAP) once idle longer than the lease. Every state change is one
script call (one round trip), fenced on the entry's owner.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from maas import metrics
from maas.queue.v1.queue_pb2 import JobEnvelope, JobResult, JobState
from maas.settings import Settings
from scheduler import keys
from scheduler.redis_types import Entry, Fields, GroupStreams
from scheduler.scripts import Scripts

IDEMPOTENCY_TTL_S = 24 * 3600
T = TypeVar("T")


class SubmitStatus(Enum):
    CREATED = "OK"
    EXISTS = "EXISTS"
    MISMATCH = "MISMATCH"
    FULL = "FULL"  # the stream is at its depth limit: nothing was written
    QUOTA = "QUOTA"  # the tenant has its most queued jobs on this model: nothing was written


UNCAPPED = 1 << 30  # a share cap that never backlogs (counts only, for the queued quota)


@dataclass(frozen=True)
class TenantPolicy:
    """Fair share and quotas of tenants on one model's queue (tenant "" has neither)."""

    # Undelivered entries a tenant of weight 1 may hold per model; 0 = no fair share.
    share_slots: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    # Most jobs a tenant may have queued per model; 0 = no limit.
    max_queued: int = 0

    def cap(self, tenant: str) -> int:
        """The tenant's share cap; 0 = not counted at all."""
        if not tenant:
            return 0
        if self.share_slots:
            return max(1, round(self.share_slots * self.weights.get(tenant, 1.0)))
        return UNCAPPED if self.max_queued else 0


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff of a job whose worker was lost: base * 2^(attempt-1), capped, times 0.5..1."""

    backoff_ms: int = 200
    backoff_max_ms: int = 10_000


@dataclass(frozen=True)
class Delivery:
    """A stream entry a worker read: its lease is held until completed or lost."""

    model: str
    entry_id: str
    job_id: str
    level: str = "normal"  # the priority stream it came from

    @property
    def stream(self) -> str:
        return keys.stream(self.model, self.level)


def by_level(items: Sequence[T], delivery: Callable[[T], Delivery]) -> dict[str, list[T]]:
    """Items grouped by the priority stream of their delivery (one script call per stream)."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(delivery(item).level, []).append(item)
    return groups


@dataclass(frozen=True)
class Started:
    """A delivery the START script let run, with its attempt number (the fencing token)."""

    delivery: Delivery
    attempt: int
    envelope: JobEnvelope


@dataclass
class StartOutcome:
    runnable: list[Started] = field(default_factory=list)
    # Jobs answered by START itself: expired while queued or out of attempts.
    expired: int = 0
    dead: int = 0
    skipped: int = 0

    def add(self, delivery: Delivery, status: str, attempt: int, envelope: bytes) -> None:
        match status:
            case "RUN":
                self.runnable.append(Started(delivery, attempt, JobEnvelope.FromString(envelope)))
            case "EXPIRED":
                self.expired += 1
                metrics.JOBS_EXPIRED.labels(metrics.model_label(delivery.model)).inc()
            case "DEAD":
                self.dead += 1
                metrics.DEAD_LETTERS.labels(metrics.model_label(delivery.model)).inc()
            case _:
                self.skipped += 1


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    job_id: str
    attempts: int
    redrivable: bool


@dataclass(frozen=True)
class ReapCounts:
    requeued: int
    expired: int
    dead: int
    dropped: int


def new_job_id() -> str:
    return uuid.uuid4().hex


def fingerprint(envelope: JobEnvelope) -> str:
    """What makes two submits with one idempotency key the same request."""
    body = JobEnvelope()
    body.CopyFrom(envelope)
    for name in ("job_id", "reply_to", "deadline_unix_ms", "enqueue_unix_ms", "trace_context",
                 "result_ttl_ms"):
        body.ClearField(name)
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def tenant_policy(settings: Settings) -> TenantPolicy:
    return TenantPolicy(settings.fair_share_slots, settings.tenant_weight_map,
                        settings.tenant_max_queued)


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(settings.retry_backoff_ms, settings.retry_backoff_max_ms)


class JobQueue:
    """The queue API used in-process by the gateway, the worker and the daemon."""

    def __init__(self, client: aioredis.Redis, *, result_ttl_ms: int = 3_600_000,
                 max_depth: int = 0, tenants: TenantPolicy | None = None,
                 retry: RetryPolicy | None = None) -> None:
        self._redis = client
        self._scripts = Scripts.register(client)
        self._result_ttl_ms = result_ttl_ms
        self._max_depth = max_depth  # most entries per priority stream; 0 = no limit
        self.tenants = tenants or TenantPolicy()
        self._retry = retry or RetryPolicy()

    # --- producer side ---------------------------------------------------------------------

    def _submit_args(self, envelope: JobEnvelope) -> tuple[list[str], list[Any]]:
        model, tenant = envelope.model, envelope.tenant
        level = keys.level_of(envelope.priority)
        job_keys = [keys.stream(model, level), keys.job(model, envelope.job_id),
                    keys.share(model, tenant), keys.backlog(model, level, tenant)]
        if envelope.idempotency_key:
            job_keys.append(keys.idempotency(model, tenant, envelope.idempotency_key))
        return job_keys, [envelope.job_id, envelope.SerializeToString(),
                          envelope.deadline_unix_ms, envelope.max_attempts, envelope.reply_to,
                          fingerprint(envelope) if envelope.idempotency_key else "",
                          IDEMPOTENCY_TTL_S, envelope.result_ttl_ms, envelope.model_version,
                          tenant, self._max_depth, self.tenants.cap(tenant),
                          self.tenants.max_queued]

    async def submit(self, envelope: JobEnvelope) -> tuple[SubmitStatus, str]:
        """Stores the job and its stream entry in one script call; returns (status, job id)."""
        job_keys, args = self._submit_args(envelope)
        status, job_id = await self._scripts.submit(keys=job_keys, args=args)
        return SubmitStatus(_s(status)), _s(job_id)

    async def submit_many(self, envelopes: Sequence[JobEnvelope],
                          ) -> list[tuple[SubmitStatus, str] | Exception]:
        """Many submits in one round trip (a pipeline of SUBMIT scripts, not a transaction:
        each job is accepted or refused on its own)."""
        replies = await self._pipelined_submits(envelopes)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # Redis restarted and lost its scripts: load, resend only those
            await self._redis.script_load(self._scripts.submit.script)
            again = await self._pipelined_submits([envelopes[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return [r if isinstance(r, Exception) else (SubmitStatus(_s(r[0])), _s(r[1]))
                for r in replies]

    async def _pipelined_submits(self, envelopes: Sequence[JobEnvelope]) -> list[Any]:
        # EVALSHA by hand: a pipeline of Script calls would send SCRIPT EXISTS every time.
        pipe = self._redis.pipeline(transaction=False)
        for envelope in envelopes:
            job_keys, args = self._submit_args(envelope)
            pipe.evalsha(self._scripts.submit.sha, len(job_keys), *job_keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def cancel_queued(self, model: str, job_id: str, state: str = "CANCELLED") -> bool:
        """Ends a job that has not started (CANCELLED or EXPIRED); False if it already ran."""
        done = await self._scripts.cancel(keys=[keys.job(model, job_id), *keys.queue_keys(model)],
                                          args=[state, self._result_ttl_ms, 0])
        return bool(done)

    async def cancel(self, model: str, job_id: str) -> bool:
        """Cancels a queued job, or flags a running one (its result will be dropped);
        False when the job does not exist or already ended."""
        done = await self._scripts.cancel(keys=[keys.job(model, job_id), *keys.queue_keys(model)],
                                          args=["CANCELLED", self._result_ttl_ms, 1])
        return bool(done)

    async def ensure_group(self, model: str) -> None:
        """Creates the model's priority streams and their consumer group (idempotent)."""
        for level in keys.LEVELS:
            try:
                await self._redis.xgroup_create(keys.stream(model, level), keys.GROUP, id="0",
                                                mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def job_state(self, model: str, job_id: str) -> dict[str, bytes]:
        """The job hash, for inspection and tests."""
        raw = cast("Fields", await self._redis.hgetall(keys.job(model, job_id)))
        return {_s(k): v for k, v in raw.items()}

    # --- consumer side ---------------------------------------------------------------------

    async def read(self, consumer: str, models: Sequence[str], count: int,
                   block_ms: int | None) -> list[Delivery]:
        """New entries of the given models, up to `count` per model, blocking up to block_ms."""
        if not models:
            return []
        by_stream = {keys.stream(m, level): (m, level) for m in models for level in keys.LEVELS}
        reply = cast("GroupStreams | None", await self._redis.xreadgroup(
            keys.GROUP, consumer, dict.fromkeys(by_stream, ">"), count=count, block=block_ms))
        found = []
        for stream, entries in reply or []:
            model, level = by_stream[_s(stream)]
            found += [Delivery(model, _s(entry_id), _s(fields[b"job"]), level)
                      for entry_id, fields in entries if fields]
        return found

    async def start(self, consumer: str, deliveries: Sequence[Delivery]) -> StartOutcome:
        """Runs START for deliveries of one model (one call per priority stream)."""
        outcome = StartOutcome()
        for group in by_level(deliveries, lambda d: d).values():
            model = group[0].model
            args: list[str | int] = [keys.GROUP, consumer, self._result_ttl_ms]
            for d in group:
                args += [d.entry_id, d.job_id]
            rows = await self._scripts.start(
                keys=[group[0].stream, keys.dead_letters(model), *keys.queue_keys(model),
                      *(keys.job(model, d.job_id) for d in group)],
                args=args)
            for d, (status, attempt, env) in zip(group, rows, strict=True):
                outcome.add(d, _s(status), int(attempt), env)
        return outcome

    async def claim(self, consumer: str, model: str, count: int) -> StartOutcome:
        """Reads up to `count` new entries of a model and starts them: one round trip."""
        rows = await self._scripts.claim(
            keys=[*keys.queue_keys(model), keys.dead_letters(model)],
            args=[keys.GROUP, consumer, self._result_ttl_ms, count])
        outcome = StartOutcome()
        for status, attempt, env, entry_id, job_id, level in rows:
            delivery = Delivery(model, _s(entry_id), _s(job_id), keys.LEVELS[int(level) - 1])
            outcome.add(delivery, _s(status), int(attempt), env)
        return outcome

    async def extend(self, consumer: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Renews leases (one call per priority stream); returns the deliveries it lost."""
        lost: list[Delivery] = []
        for group in by_level(deliveries, lambda d: d).values():
            by_entry = {d.entry_id: d for d in group}
            gone = await self._scripts.extend(
                keys=[group[0].stream], args=[keys.GROUP, consumer, *by_entry])
            lost += [by_entry[_s(e)] for e in gone]
        return lost

    async def complete(self, consumer: str,
                       results: Sequence[tuple[Delivery, JobResult]]) -> list[bool]:
        """Records the outcome of jobs of one model (one script call per priority stream);
        False = lease lost, the result was dropped."""
        recorded: dict[str, bool] = {}
        for group in by_level(results, lambda r: r[0]).values():
            model = group[0][0].model
            args: list[str | int | bytes] = [keys.GROUP, consumer, self._result_ttl_ms]
            for d, result in group:
                args += [d.entry_id, d.job_id, JobState.Name(result.state)[len("JOB_STATE_"):],
                         result.SerializeToString()]
            flags = await self._scripts.complete(
                keys=[group[0][0].stream, *(keys.job(model, d.job_id) for d, _ in group)],
                args=args)
            recorded.update((d.entry_id, bool(f)) for (d, _), f in zip(group, flags, strict=True))
        return [recorded[d.entry_id] for d, _ in results]

    async def release(self, consumer: str, delivery: Delivery, *, refund: bool) -> bool:
        """Hands a held job back to the queue; refund=True does not count the attempt."""
        done = await self._scripts.release(
            keys=[delivery.stream, keys.job(delivery.model, delivery.job_id),
                  *keys.queue_keys(delivery.model)],
            args=[keys.GROUP, consumer, delivery.entry_id, int(refund), delivery.job_id])
        return bool(done)

    @property
    def scripts(self) -> Scripts:
        return self._scripts

    # --- operators --------------------------------------------------------------------------

    async def dead_letters(self, model: str, count: int = 100) -> list[DeadLetter]:
        """Dead-lettered jobs of a model, oldest first."""
        rows = cast("list[Entry]", await self._redis.xrange(keys.dead_letters(model), count=count))
        found = []
        for entry_id, fields in rows:
            job_id = _s(fields[b"job"])
            has_env = await self._redis.hexists(keys.job(model, job_id), "env")
            found.append(DeadLetter(_s(entry_id), job_id, int(fields.get(b"attempts", 0)),
                                    bool(has_env)))
        return found

    async def redrive(self, model: str, job_ids: Sequence[str] = ()) -> list[str]:
        """Queues dead-lettered jobs again (all of the model's when job_ids is empty)."""
        wanted = set(job_ids)
        done = []
        for letter in await self.dead_letters(model, count=10_000):
            if wanted and letter.job_id not in wanted:
                continue
            if await self._scripts.redrive(
                    keys=[keys.stream(model), keys.job(model, letter.job_id),
                          keys.dead_letters(model), *keys.queue_keys(model)],
                    args=[letter.job_id, letter.entry_id]):
                done.append(letter.job_id)
        return done

    # --- daemon side -----------------------------------------------------------------------

    async def reap(self, model: str, lease_ms: int, count: int = 100,
                   result_ttl_ms: int | None = None) -> ReapCounts:
        """Reclaims entries idle longer than the lease on each priority stream; requeues
        (after a backoff, see `promote`), expires or dead-letters their jobs."""
        total = [0, 0, 0, 0]
        for level in keys.LEVELS:
            counts = await self._scripts.reap(
                keys=[keys.stream(model, level), keys.dead_letters(model), keys.delayed(model),
                      *keys.queue_keys(model)],
                args=[keys.GROUP, keys.REAPER_CONSUMER, lease_ms, count,
                      result_ttl_ms or self._result_ttl_ms, level, self._retry.backoff_ms,
                      self._retry.backoff_max_ms, random.random()])
            total = [t + int(c) for t, c in zip(total, counts, strict=True)]
        return ReapCounts(*total)

    async def promote(self, model: str, count: int = 1000) -> int:
        """Moves jobs whose retry backoff is over back to their streams; returns how many."""
        return int(await self._scripts.promote(
            keys=[keys.delayed(model), *keys.queue_keys(model)], args=[count]))

    async def tenant_queued(self, model: str, tenant: str) -> int:
        """Jobs of a tenant waiting on a model (stream entries not yet delivered + backlog)."""
        ready, backlog = await self._redis.hmget(keys.share(model, tenant), "ready", "backlog")
        return int(ready or 0) + int(backlog or 0)
