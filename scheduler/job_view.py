"""JobView: a job as its readers see it, built in one place from the job hash.

The job hash (`keys.job(model, job_id)`, written only by the queue's Lua scripts) is the source
of truth; its fields are raw bytes. `job_view` is the one function that decodes them, and
`JobReader.read` the one read of them outside the scripts (one HMGET, one round trip).

Job ids: `scheduler.queue.new_job_id` mints every id. An asynchronous inference job's id is
`<model id>:<new_job_id()>` (`addressed_job_id`), so that a job is found again from its id
alone (model ids cannot hold ':'); `model_of_job_id` splits it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import redis.asyncio as aioredis

from runtime.queue.v1.queue_pb2 import JobError, JobResult, JobState
from scheduler import keys

if TYPE_CHECKING:
    from scheduler.queue import JobQueue

# The hash fields a view is made of (the scripts write others: env, entry, owner, share, ...).
FIELDS = ("state", "attempt", "max_attempts", "tenant", "version", "created_ms", "deadline_ms",
          "cancel", "result", "error_code", "error_reason", "error_message")
_STATE_PREFIX = "JOB_STATE_"
TERMINAL_STATES = frozenset({JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED,
                             JobState.JOB_STATE_CANCELLED, JobState.JOB_STATE_EXPIRED,
                             JobState.JOB_STATE_DEAD_LETTERED})


@dataclass(frozen=True)
class JobView:
    """One job as the hash holds it, decoded. Times are Unix ms (0 = not recorded)."""

    job_id: str
    model: str  # the model id (`<tenant>/<name>`) whose queue holds the job
    state: JobState.ValueType
    attempt: int  # attempts a worker started (the fencing token of the current one)
    max_attempts: int
    tenant: str
    version: str  # the model version it runs on ("" for training jobs)
    created_ms: int
    deadline_ms: int  # 0 = none
    is_cancel_requested: bool  # a running job whose result will be dropped
    result: JobResult | None  # set once a worker completed it (not when cancelled running)
    error: JobError | None  # why it did not succeed: the result's error, else the scripts'

    @property
    def state_name(self) -> str:
        """The state as the hash spells it: QUEUED, RUNNING, SUCCEEDED, ..."""
        return JobState.Name(self.state).removeprefix(_STATE_PREFIX)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def _text(value: bytes | None) -> str:
    return value.decode() if value else ""


def _int(value: bytes | None) -> int:
    return int(value) if value else 0


def _error(result: JobResult | None, fields: dict[str, bytes | None]) -> JobError | None:
    """The result's error when a result is stored; else the one the scripts wrote (expired,
    dead-lettered, cancelled while queued)."""
    if result is not None:
        return result.error if result.HasField("error") else None
    if fields.get("error_code") is None:
        return None
    return JobError(code=_text(fields["error_code"]), reason=_text(fields.get("error_reason")),
                    message=_text(fields.get("error_message")))


def job_view(model: str, job_id: str, fields: dict[str, bytes | None]) -> JobView | None:
    """The view of a job hash's fields (missing fields None); None when there is no job.
    ValueError for a state no script writes."""
    raw_state = fields.get("state")
    if not raw_state:
        return None
    result = JobResult.FromString(raw) if (raw := fields.get("result")) else None
    return JobView(
        job_id=job_id, model=model, state=JobState.Value(_STATE_PREFIX + raw_state.decode()),
        attempt=_int(fields.get("attempt")), max_attempts=_int(fields.get("max_attempts")),
        tenant=_text(fields.get("tenant")), version=_text(fields.get("version")),
        created_ms=_int(fields.get("created_ms")), deadline_ms=_int(fields.get("deadline_ms")),
        is_cancel_requested=fields.get("cancel") == b"1", result=result,
        error=_error(result, fields))


def addressed_job_id(model: str, job_id: str) -> str:
    """An asynchronous job's public id: `<model id>:<job_id>` (job_id from new_job_id)."""
    return f"{model}:{job_id}"


def model_of_job_id(job_id: str) -> str | None:
    """The model id an addressed job id names; None when it has no `<model>:` part or nothing
    after it (the model id itself is not checked here)."""
    model, sep, rest = job_id.rpartition(":")
    return model if sep and rest else None


class JobReader:
    """Reads job hashes into JobViews, on the queue's own client (one client per process)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    @classmethod
    def of(cls, queue: JobQueue) -> JobReader:
        """A reader sharing `queue`'s client (its scripts are registered on that client)."""
        return cls(queue.client)

    async def read(self, model: str, job_id: str) -> JobView | None:
        """The job, or None when there is none (never submitted, or its result expired)."""
        values = cast("list[bytes | None]",
                      await self._redis.hmget(keys.job(model, job_id), list(FIELDS)))
        return job_view(model, job_id, dict(zip(FIELDS, values, strict=True)))
