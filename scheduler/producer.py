"""Producer: the gateway's side of the queue: submit (hashed or lean) and cancel jobs.

A submit the queue refuses raises (or, in submit_many, answers) the error a caller gets,
decided here where the refusal is: QueueFull, QuotaExceeded, IdempotencyKeyReused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from maas.errors import (
    IdempotencyKeyReused,
    MaasError,
    QueueFull,
    QuotaExceeded,
    QuotaViolation,
    shown,
)
from runtime.queue.v1.queue_pb2 import JobEnvelope
from scheduler import keys
from scheduler.job_types import SubmitStatus, _Call, fingerprint, queue_of
from scheduler.queue_core import QueueCore, _s

IDEMPOTENCY_TTL_S = 24 * 3600
# How long a SUBMIT_LEAN call's receipt lasts: longer than any resend of the call (the
# client's retries, each bounded by SOCKET_TIMEOUT_S, and a failover's redirect).
RECEIPT_TTL_MS = 60_000
Accepted = tuple[SubmitStatus, str]  # (CREATED or EXISTS, job id)


def queue_full(model: str, depth: str) -> QueueFull:
    return QueueFull(f"the queue of model {model!r} is full ({depth} jobs queued or running; "
                     "MAAS_MAX_QUEUE_DEPTH): retry shortly", retry_delay_s=1.0)


def tenant_quota(model: str, tenant: str, queued: str, limit: int,
                 queue: str = "", per_queue: int = 0) -> QuotaExceeded:
    where = (f"on queue {queue!r} of model {model!r}, its most there ({per_queue}: "
             f"MAAS_TENANT_MAX_QUEUED={limit} split among the model's queues)" if queue else
             f"on model {model!r}, its most (MAAS_TENANT_MAX_QUEUED={limit})")
    return QuotaExceeded(
        f"tenant {tenant!r} has {queued} jobs queued {where}: wait for some to finish, "
        "then retry",
        retry_delay_s=1.0,
        quota_violations=(QuotaViolation(f"tenant:{tenant}",
                                         f"at most {limit} queued jobs per model"),))


def key_reused(key: str, job_id: str) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(f"request_id {shown(key)} was used for a different request "
                                f"(job {job_id})")


class Producer(QueueCore):
    def _submit_args(self, envelope: JobEnvelope) -> tuple[list[str], list[Any]]:
        queue, tenant = queue_of(envelope), envelope.tenant
        level = keys.level_of(envelope.priority)
        job_keys = [keys.stream(queue, level), keys.job(queue, envelope.job_id),
                    keys.share(queue, tenant), keys.backlog(queue, level, tenant)]
        if envelope.idempotency_key:
            job_keys.append(keys.idempotency(queue, tenant, envelope.idempotency_key))
        # Each queue of a sharded model applies its part of the depth limit and the tenant's
        # caps (scheduler/shards.py).
        split = self.shards.split_cap
        model = envelope.model
        return job_keys, [envelope.job_id, envelope.SerializeToString(),
                          envelope.deadline_unix_ms, envelope.max_attempts, envelope.reply_to,
                          fingerprint(envelope) if envelope.idempotency_key else "",
                          IDEMPOTENCY_TTL_S, envelope.result_ttl_ms, envelope.model_version,
                          tenant, split(model, self._max_depth),
                          split(model, self.tenants.cap(tenant)),
                          split(model, self.tenants.max_queued)]

    async def submit(self, envelope: JobEnvelope) -> Accepted:
        """Stores the job and its stream entry in one script call; returns (CREATED, job id),
        or (EXISTS, its job id) for a request_id seen before; raises a refusal (`_outcome`)."""
        if self._replica_wait is not None:  # the submit and its WAIT on one connection
            [reply] = await self.submit_many([envelope])
            if isinstance(reply, Exception):
                raise reply
            return reply
        job_keys, args = self._submit_args(envelope)
        status, job_id = await self._scripts.submit(keys=job_keys, args=args)
        outcome = self._outcome(envelope, _s(status), _s(job_id))
        if isinstance(outcome, MaasError):
            raise outcome
        return outcome

    def _outcome(self, envelope: JobEnvelope, status: str, detail: str) -> Accepted | MaasError:
        """A script's answer as the caller gets it: accepted, or the refusal's error (nothing
        was written)."""
        match SubmitStatus(status):
            case SubmitStatus.FULL:
                return queue_full(envelope.model, detail)
            case SubmitStatus.QUOTA:
                limit = self.tenants.max_queued
                sharded = self.shards.count(envelope.model) > 1
                return tenant_quota(envelope.model, envelope.tenant, detail, limit,
                                    queue_of(envelope) if sharded else "",
                                    self.shards.split_cap(envelope.model, limit))
            case SubmitStatus.MISMATCH:
                return key_reused(envelope.idempotency_key, detail)
            case accepted:
                return accepted, detail

    def is_lean(self, envelope: JobEnvelope) -> bool:
        """Whether a synchronous call's job may go by SUBMIT_LEAN: someone waits for its reply,
        and nothing needs its hash while queued (no idempotency key, no tenant share)."""
        return (bool(envelope.reply_to) and not envelope.idempotency_key
                and self.tenants.cap(envelope.tenant) == 0)

    async def submit_many(self, envelopes: Sequence[JobEnvelope], *, lean: bool = False,
                          ) -> list[Accepted | Exception]:
        """Many submits in one round trip (a pipeline of script calls, not a transaction:
        each job is accepted or refused on its own). With lean=True (synchronous calls), the
        jobs that qualify (`is_lean`) go by SUBMIT_LEAN, one call per priority stream."""
        units = self._submit_units(envelopes, lean)
        replies = await self._pipelined(units)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # Redis restarted and lost its scripts: load, resend only those
            for script in {units[i].script.sha: units[i].script for i in missing}.values():
                await self._redis.script_load(script.script)
            again = await self._pipelined([units[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        out: list[Accepted | Exception] = [RuntimeError("not sent")] * len(envelopes)
        for unit, reply in zip(units, replies, strict=True):
            rows = [reply] * len(unit.indices) if isinstance(reply, Exception) else (
                reply if unit.script is self._scripts.submit_lean else [reply])
            for i, row in zip(unit.indices, rows, strict=True):
                out[i] = row if isinstance(row, Exception) else self._outcome(
                    envelopes[i], _s(row[0]), _s(row[1]))
        return out

    def _submit_units(self, envelopes: Sequence[JobEnvelope], lean: bool) -> list[_Call]:
        """One SUBMIT per job, one SUBMIT_LEAN per priority stream of the lean ones."""
        units: list[_Call] = []
        lean_by_stream: dict[str, _Call] = {}
        for i, envelope in enumerate(envelopes):
            if lean and self.is_lean(envelope):
                stream = keys.stream(queue_of(envelope), keys.level_of(envelope.priority))
                unit = lean_by_stream.get(stream)
                if unit is None:
                    depth = self.shards.split_cap(envelope.model, self._max_depth)
                    receipt = keys.receipt(queue_of(envelope), envelope.job_id)
                    unit = lean_by_stream[stream] = _Call(
                        self._scripts.submit_lean, [stream, receipt], [depth, RECEIPT_TTL_MS])
                    units.append(unit)
                unit.indices.append(i)
                unit.args += [envelope.job_id, envelope.SerializeToString(),
                              envelope.deadline_unix_ms, envelope.max_attempts,
                              envelope.reply_to, envelope.model_version, envelope.tenant]
            else:
                job_keys, args = self._submit_args(envelope)
                units.append(_Call(self._scripts.submit, job_keys, args, [i]))
        return units

    async def _pipelined(self, calls: Sequence[_Call]) -> list[Any]:
        if self._replica_wait is not None:
            return await self._replica_wait.pipelined(calls)
        if len(calls) == 1:  # the usual case (one SUBMIT_LEAN): no pipeline object
            call = calls[0]
            try:
                return [await self._redis.evalsha(
                    call.script.sha, len(call.keys), *call.keys, *call.args)]
            except ResponseError as exc:  # as the pipeline below returns it (NoScriptError...)
                return [exc]
        # EVALSHA by hand: a pipeline of Script calls would send SCRIPT EXISTS every time.
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        return list(await pipe.execute(raise_on_error=False))

    async def cancel_queued(self, model: str, job_id: str, state: str = "CANCELLED") -> bool:
        """Ends a job that has not started (CANCELLED or EXPIRED); False if it already ran.
        `model` is the job's queue (a model, or a shard of one: scheduler/shards.py)."""
        done = await self._scripts.cancel(keys=[keys.job(model, job_id), *keys.queue_keys(model)],
                                          args=[state, self._result_ttl_ms, 0, 1])
        return bool(done)

    async def cancel(self, model: str, job_id: str) -> bool:
        """Cancels a queued job, or flags a running one (its result will be dropped);
        False when the job does not exist or already ended. `model` is the job's queue."""
        done = await self._scripts.cancel(keys=[keys.job(model, job_id), *keys.queue_keys(model)],
                                          args=["CANCELLED", self._result_ttl_ms, 1, 0])
        return bool(done)
