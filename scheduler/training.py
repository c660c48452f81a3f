"""Training jobs in Redis: record, ordered events, cancellation — on the training queue.

The job hash holds the queue's fields (state, attempt, owner, cancel, tenant) and `record`, a
TrainingJob protobuf the worker rewrites as it goes. A job belongs to its tenant: read with
another tenant, it does not exist. The state a client sees is the hash's
(Lua changes it atomically); the record adds spec, metrics and progress.
"""

from __future__ import annotations

import builtins
import secrets
import time
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from maas.errors import (
    IdempotencyKeyReused,
    JobAlreadyFinished,
    QuotaExceeded,
    QuotaViolation,
    TrainingJobNotFound,
)
from maas.v1.training_service_pb2 import TrainingEvent, TrainingJob
from runtime.queue.v1.queue_pb2 import JobEnvelope
from scheduler import keys
from scheduler.queue import IDEMPOTENCY_TTL_S, Delivery, JobQueue, SubmitStatus, fingerprint
from scheduler.redis_types import ScoredMembers, Streams

Q = keys.TRAINING_QUEUE
TIES = 256  # most jobs of one tenant created in one millisecond that a page token skips
_STATES = {
    "QUEUED": TrainingJob.QUEUED, "RUNNING": TrainingJob.RUNNING,
    "SUCCEEDED": TrainingJob.SUCCEEDED, "FAILED": TrainingJob.FAILED,
    "CANCELLED": TrainingJob.CANCELLED, "DEAD_LETTERED": TrainingJob.FAILED,
    "EXPIRED": TrainingJob.FAILED,
}
TERMINAL = {TrainingJob.SUCCEEDED, TrainingJob.FAILED, TrainingJob.CANCELLED}


class LeaseLost(Exception):
    """The worker no longer holds the job: another worker may be running it."""


def state_event(state: TrainingJob.State.ValueType, message: str = "") -> TrainingEvent:
    event = TrainingEvent(state=state, message=message)
    event.time.FromNanoseconds(time.time_ns())
    return event


@dataclass(frozen=True)
class EventCursor:
    """Where a watcher is in a job's event stream."""

    stream_id: str = "0-0"


class TrainingStore:
    def __init__(self, client: aioredis.Redis, queue: JobQueue, max_active: int = 0) -> None:
        self._redis = client
        self._scripts = queue.scripts
        self.max_active = max_active  # training jobs a tenant may have queued or running

    async def create(self, job: TrainingJob, envelope: JobEnvelope) -> tuple[SubmitStatus, str]:
        """Queues the job: (CREATED, its id), or (EXISTS, the id of the job of the same
        request_id); raises IdempotencyKeyReused (another spec) or QuotaExceeded."""
        job_keys = [keys.stream(Q), keys.job(Q, job.job_id), keys.training_events(job.job_id),
                    keys.training_index(envelope.tenant), keys.training_active(envelope.tenant),
                    keys.job(Q, "")]
        if job.request_id:
            job_keys.append(keys.idempotency(Q, envelope.tenant, job.request_id))
        status, job_id = await self._scripts.train_create(keys=job_keys, args=[
            job.job_id, envelope.SerializeToString(), envelope.max_attempts,
            job.SerializeToString(), state_event(TrainingJob.QUEUED).SerializeToString(),
            fingerprint(envelope), IDEMPOTENCY_TTL_S, envelope.tenant,
            max(job.spec.replicas, 1), self.max_active if envelope.tenant else 0])
        match SubmitStatus(status.decode()):
            case SubmitStatus.MISMATCH:
                raise IdempotencyKeyReused(f"request_id {job.request_id!r} was used for a "
                                           f"different spec (job {job_id.decode()})")
            case SubmitStatus.QUOTA:  # the reply names the active count
                raise self._quota_error(envelope.tenant, job_id.decode())
            case accepted:
                return accepted, job_id.decode()

    def _quota_error(self, tenant: str, active: str) -> QuotaExceeded:
        limit = self.max_active
        return QuotaExceeded(
            f"tenant {tenant!r} has {active} training jobs queued or running, its most "
            f"(MAAS_TENANT_MAX_TRAINING={limit}): wait for one to end, then retry",
            retry_delay_s=5.0, quota_violations=(QuotaViolation(
                f"tenant:{tenant}", f"at most {limit} training jobs at once"),))

    async def get(self, job_id: str, tenant: str | None = None) -> TrainingJob:
        """The job; NOT_FOUND when there is none, or it is not `tenant`'s (None: anyone's)."""
        f = cast("list[bytes | None]", await self._redis.hmget(
            keys.job(Q, job_id), "record", "state", "attempt", "cancel", "error_message",
            "tenant", "wait"))
        if f[0] is None or (tenant is not None and (f[5] or b"").decode() != tenant):
            raise TrainingJobNotFound(f"no training job {job_id[:64]!r}")
        job = TrainingJob.FromString(f[0])
        raw_state = cast(bytes, f[1]).decode()  # set together with the record, by Lua
        job.state = _STATES.get(raw_state, TrainingJob.STATE_UNSPECIFIED)
        if job.state == TrainingJob.RUNNING and f[3] == b"1":
            job.state = TrainingJob.CANCELLING
        job.attempts = int(f[2] or 0)
        if raw_state in ("DEAD_LETTERED", "EXPIRED") and f[4]:
            job.error = f[4].decode()
        if job.state == TrainingJob.QUEUED and f[6]:
            job.status_message = f[6].decode()  # e.g. why its gang has not formed
        return job

    async def list(self, page_size: int, page_token: str,
                   tenant: str = "") -> tuple[list[TrainingJob], str]:
        """A tenant's jobs, newest first. The token is `<creation ms>` or `<creation ms>.<id>`:
        the next page starts below that job (jobs created in one millisecond are ordered by
        id, none is skipped). A job whose record has expired (dead-lettered jobs keep theirs
        for the result TTL) leaves the index here."""
        score, _, after = page_token.partition(".")
        rows = cast("ScoredMembers", await self._redis.zrevrangebyscore(
            keys.training_index(tenant), score or "+inf", "-inf", start=0,
            num=page_size + 1 + (TIES if after else 0), withscores=True))
        if after:  # members of the token's millisecond down to the token's job, then below
            tied = [i for i, (m, s) in enumerate(rows) if int(s) == int(score)
                    and m.decode() >= after]
            rows = rows[tied[-1] + 1:] if tied else rows
        elif score:
            rows = [(m, s) for m, s in rows if int(s) < int(score)]
        jobs, gone = [], []
        for job_id, _ in rows[:page_size]:
            try:
                jobs.append(await self.get(job_id.decode()))
            except TrainingJobNotFound:
                gone.append(job_id)
        if gone:
            await self._redis.zrem(keys.training_index(tenant), *gone)
        last_id, last_score = rows[page_size - 1] if len(rows) > page_size else (b"", 0.0)
        token = f"{int(last_score)}.{last_id.decode()}" if last_id else ""
        return jobs, token

    async def cancel(self, job_id: str, tenant: str | None = None) -> TrainingJob:
        if tenant is not None:
            await self.get(job_id, tenant)  # NOT_FOUND for another tenant's job
        state = (await self._scripts.train_cancel(
            keys=[keys.job(Q, job_id), keys.training_events(job_id)],
            args=[state_event(TrainingJob.CANCELLED, "cancelled while queued").SerializeToString(),
                  state_event(TrainingJob.CANCELLING).SerializeToString()])).decode()
        if not state:
            raise TrainingJobNotFound(f"no training job {job_id!r}")
        if state not in ("CANCELLED", "CANCELLING"):
            ended = state.removeprefix("ALREADY_")
            raise JobAlreadyFinished(f"training job {job_id} already ended ({ended}); "
                                     "only queued or running jobs can be cancelled")
        return await self.get(job_id)

    async def update(self, consumer: str, delivery: Delivery, *, record: TrainingJob | None = None,
                     events: tuple[TrainingEvent, ...] = (), terminal: str = "") -> bool:
        """Records events (and the record) while holding the lease; True = cancel requested."""
        flag = await self._scripts.train_update(
            keys=[keys.stream(Q), keys.job(Q, delivery.job_id),
                  keys.training_events(delivery.job_id)],
            args=[keys.GROUP, consumer, delivery.entry_id, terminal,
                  record.SerializeToString() if record is not None else "",
                  secrets.token_hex(8), *(e.SerializeToString() for e in events)])
        if int(flag) < 0:
            raise LeaseLost(f"lost the lease of training job {delivery.job_id}")
        return int(flag) == 1

    async def events(self, job_id: str, cursor: EventCursor,
                     block_ms: int) -> tuple[builtins.list[TrainingEvent], EventCursor]:
        # (builtins.list: inside this class, `list` names the method above)
        reply = cast("Streams | None", await self._redis.xread(
            {keys.training_events(job_id): cursor.stream_id}, count=500, block=block_ms))
        found: list[TrainingEvent] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                event = TrainingEvent.FromString(fields[b"ev"])
                event.sequence = int(fields[b"seq"])
                found.append(event)
                cursor = EventCursor(entry_id.decode())
        return found, cursor

    async def exists(self, job_id: str) -> bool:
        return bool(await self._redis.exists(keys.job(Q, job_id)))
