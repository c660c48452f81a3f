"""JobQueue: submit, read, start, extend, complete and reap jobs on per-model Redis streams.

One class per role over one set of scripts (queue_core.py): Producer (the gateway), Consumer
(workers), QueueAdmin (operators, inspection), Reaper (the scheduler daemon); JobQueue is
all of them, for a process that plays several. The job state machine: docs/queue-protocol.md.
"""

from __future__ import annotations

from scheduler.consumer import Consumer
from scheduler.job_types import (
    UNCAPPED,
    DeadLetter,
    Delivery,
    ReapCounts,
    RetryPolicy,
    Started,
    StartOutcome,
    SubmitStatus,
    TenantPolicy,
    by_level,
    fingerprint,
    new_job_id,
    queue_of,
    retry_policy,
    tenant_policy,
)
from scheduler.producer import IDEMPOTENCY_TTL_S, Producer
from scheduler.queue_admin import QueueAdmin
from scheduler.reaper import Reaper

__all__ = ["IDEMPOTENCY_TTL_S", "UNCAPPED", "Consumer", "DeadLetter", "Delivery", "JobQueue",
           "Producer", "QueueAdmin", "ReapCounts", "Reaper", "RetryPolicy", "StartOutcome",
           "Started", "SubmitStatus", "TenantPolicy", "by_level", "fingerprint", "new_job_id",
           "queue_of", "retry_policy", "tenant_policy"]


class JobQueue(Producer, Consumer, QueueAdmin, Reaper):
    """The queue API used in-process by the gateway, the worker and the daemon."""
