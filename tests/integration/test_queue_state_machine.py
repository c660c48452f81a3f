"""Random interleavings of submit / claim / heartbeat / complete / reap / cancel against the
real Lua scripts, with three tenants (one without a fair share), three priorities and a small
share cap. Invariants: at most one accepted completion per job, attempts never above
max_attempts, terminal states final, each tenant's share counters equal to what the streams
and backlogs hold, and after a drain every job is terminal, nothing pending or backlogged."""

from __future__ import annotations

import asyncio
from typing import Any

import redis as syncredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from runtime.queue.v1.queue_pb2 import InferTask, JobEnvelope, JobKind, JobResult, JobState
from scheduler import keys
from scheduler.connection import connect
from scheduler.queue import JobQueue, RetryPolicy, Started, TenantPolicy, new_job_id

MODEL = "sm"
WORKERS = ("w1", "w2", "w3")
TERMINAL = {b"SUCCEEDED", b"FAILED", b"CANCELLED", b"EXPIRED", b"DEAD_LETTERED"}
MAX_ATTEMPTS = 2
TENANTS = ("", "a", "b")  # "" has no fair share
CAP = 2


class QueueMachine(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        syncredis.Redis.from_url(self.url).flushall()
        self.loop = asyncio.new_event_loop()
        self.client = connect(self.url)
        self.queue = JobQueue(self.client, result_ttl_ms=600_000,
                              tenants=TenantPolicy(share_slots=CAP),
                              retry=RetryPolicy(backoff_ms=0, backoff_max_ms=0))
        self.run(self.queue.ensure_group(MODEL))
        self.jobs: list[str] = []
        self.held: dict[str, list[Started]] = {w: [] for w in WORKERS}
        self.accepted: dict[str, int] = {}
        self.terminal_seen: dict[str, bytes] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def state(self, job_id: str) -> dict[str, bytes]:
        return self.run(self.queue.job_state(MODEL, job_id))  # type: ignore[no-any-return]

    @rule(tenant=st.sampled_from(TENANTS), priority=st.sampled_from((0, 1, 3)))
    def submit(self, tenant: str, priority: int) -> None:
        job = JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER, model=MODEL,
                          model_version="1", max_attempts=MAX_ATTEMPTS, infer=InferTask(),
                          tenant=tenant, priority=priority)
        self.run(self.queue.submit(job))
        self.jobs.append(job.job_id)

    @rule(worker=st.sampled_from(WORKERS), count=st.integers(1, 4))
    def claim(self, worker: str, count: int) -> None:
        self.held[worker] += self.run(self.queue.claim(worker, MODEL, count)).runnable

    @rule(worker=st.sampled_from(WORKERS))
    def heartbeat(self, worker: str) -> None:
        self.run(self.queue.extend(worker, [s.delivery for s in self.held[worker]]))

    @rule(worker=st.sampled_from(WORKERS), data=st.data())
    def complete(self, worker: str, data: st.DataObject) -> None:
        if not self.held[worker]:
            return
        started = self.held[worker].pop(data.draw(st.integers(0, len(self.held[worker]) - 1)))
        result = JobResult(job_id=started.delivery.job_id, state=JobState.JOB_STATE_SUCCEEDED)
        [ok] = self.run(self.queue.complete(worker, [(started.delivery, result)]))
        if ok:
            self.accepted[started.delivery.job_id] = self.accepted.get(
                started.delivery.job_id, 0) + 1

    @rule(worker=st.sampled_from(WORKERS))
    def crash(self, worker: str) -> None:
        self.held[worker] = []  # the worker dies: its leases are only reclaimed by REAP

    @rule()
    def reap(self) -> None:
        self.run(self.queue.reap(MODEL, lease_ms=0))  # every idle lease counts as expired

    @rule()
    def promote(self) -> None:
        self.run(self.queue.promote(MODEL))  # backoff 0: every reaped job is due

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if self.jobs:
            self.run(self.queue.cancel(MODEL, data.draw(st.sampled_from(self.jobs))))

    @invariant()
    def invariants(self) -> None:
        assert all(n == 1 for n in self.accepted.values()), self.accepted
        for job_id in self.jobs:
            f = self.state(job_id)
            assert int(f.get("attempt", b"0")) <= MAX_ATTEMPTS
            if job_id in self.terminal_seen:
                assert f["state"] == self.terminal_seen[job_id], "a terminal state changed"
            elif f["state"] in TERMINAL:
                self.terminal_seen[job_id] = f["state"]

    @invariant()
    def share_counters_match(self) -> None:
        """`ready` = the tenant's undelivered stream entries (of jobs still counted), and
        `backlog` = what its backlog lists hold."""
        for tenant in TENANTS[1:]:
            ready, backlog = self.run(self.client.hmget(keys.share(MODEL, tenant),
                                                        "ready", "backlog"))
            assert int(ready or 0) == self.undelivered(tenant)
            lists = [keys.backlog(MODEL, level, tenant) for level in keys.LEVELS]
            assert int(backlog or 0) == sum(self.run(self.client.llen(k)) for k in lists)

    def undelivered(self, tenant: str) -> int:
        count = 0
        for level in keys.LEVELS:
            stream = keys.stream(MODEL, level)
            [group] = self.run(self.client.xinfo_groups(stream))
            last = group["last-delivered-id"].decode()
            for _, fields in self.run(self.client.xrange(stream, min="(" + last)):
                f = self.run(self.client.hmget(keys.job(MODEL, fields[b"job"].decode()),
                                               "tenant", "share"))
                count += f[0] == tenant.encode() and int(f[1] or 0) > 0
        return count

    def teardown(self) -> None:
        try:
            for _ in range(2 * MAX_ATTEMPTS + 2 + 40 // CAP):  # drain: crash all, reap, run
                self.held = {w: [] for w in WORKERS}
                self.run(self.queue.reap(MODEL, lease_ms=0))
                self.run(self.queue.promote(MODEL))
                for started in self.run(self.queue.claim("drain", MODEL, 1000)).runnable:
                    result = JobResult(job_id=started.delivery.job_id,
                                       state=JobState.JOB_STATE_SUCCEEDED)
                    self.run(self.queue.complete("drain", [(started.delivery, result)]))
            for job_id in self.jobs:
                assert self.state(job_id)["state"] in TERMINAL, job_id
            for level in keys.LEVELS:
                pending = self.run(self.client.xpending(keys.stream(MODEL, level), keys.GROUP))
                assert pending["pending"] == 0
            for tenant in TENANTS[1:]:
                share = self.run(self.client.hgetall(keys.share(MODEL, tenant)))
                assert all(int(v) == 0 for v in share.values()), (tenant, share)
            assert self.run(self.client.zcard(keys.delayed(MODEL))) == 0
        finally:
            self.run(self.client.aclose())
            self.loop.close()


def test_queue_scripts_keep_their_invariants(redis_url: str) -> None:
    QueueMachine.url = redis_url
    run_state_machine_as_test(QueueMachine, settings=settings(
        max_examples=300, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
