"""What the queue's roles exchange: deliveries, started jobs, outcomes, policies, job ids.

The job state machine and the script that moves each state are in docs/queue-protocol.md.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, TypeVar

from redis.commands.core import AsyncScript

from runtime import metrics
from runtime.queue.v1.queue_pb2 import JobEnvelope
from runtime.settings import Settings
from scheduler import keys

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
    # A lean job's reply stream (its entry carries its envelope; no job hash: see SUBMIT_LEAN);
    # "" for a job with a hash.
    reply_to: str = ""
    # The queue it came from: `<model>#<n>` for a shard of a sharded model (scheduler/shards.py);
    # "" = the model's own queue.
    queue: str = ""

    @property
    def queue_name(self) -> str:
        """The queue whose keys hold this job (the model's own, or one of its shards)."""
        return self.queue or self.model

    @property
    def stream(self) -> str:
        return keys.stream(self.queue_name, self.level)


def by_level(items: Sequence[T], delivery: Callable[[T], Delivery]) -> dict[str, list[T]]:
    """Items grouped by the stream of their delivery (its queue and priority level): one
    script call per stream."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(delivery(item).stream, []).append(item)
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
            case "LEAN":
                job = JobEnvelope.FromString(envelope)
                self.runnable.append(Started(replace(delivery, reply_to=job.reply_to), attempt,
                                             job))
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
    queue: str = ""  # the queue it died on (a model's, or one of its shards)


@dataclass(frozen=True)
class ReapCounts:
    requeued: int
    expired: int
    dead: int
    dropped: int


@dataclass
class _Call:
    """One script call of a pipeline and the jobs (by index) it answers for."""

    script: AsyncScript
    keys: list[str]
    args: list[Any]
    indices: list[int] = field(default_factory=list)


def queue_of(envelope: JobEnvelope) -> str:
    """The queue whose keys hold the job: its model's own, or the shard it names."""
    return envelope.queue or envelope.model


def new_job_id() -> str:
    """128 random bits as 32 hex digits (a uuid4's hex, without the uuid object: per call)."""
    return os.urandom(16).hex()


def fingerprint(envelope: JobEnvelope) -> str:
    """What makes two submits with one idempotency key the same request."""
    body = JobEnvelope()
    body.CopyFrom(envelope)
    for name in ("job_id", "reply_to", "deadline_unix_ms", "enqueue_unix_ms", "trace_context",
                 "result_ttl_ms", "queue"):
        body.ClearField(name)
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()



def tenant_policy(settings: Settings) -> TenantPolicy:
    return TenantPolicy(settings.fair_share_slots, settings.tenant_weight_map,
                        settings.tenant_max_queued)


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(settings.retry_backoff_ms, settings.retry_backoff_max_ms)
