"""The zero-loss audit every fault test ends with: accepted / completed / lost / duplicated,
read from the final Redis state (the truth, not the client's view) once the queue is quiet.

- accepted: job records of the audited models, plus lean jobs (synchronous calls' jobs, which
  have no record while all goes well: see "Lean jobs" in scheduler/lua/common.lua): those
  with an outcome on a gateway's reply stream and no record, and those still in a stream;
- completed: those in exactly one terminal state (a lean job's: its reply's);
- lost: accepted jobs still QUEUED/RUNNING at quiescence, lean jobs still in a stream, or
  anything left pending in a stream, a backlog or the delayed set;
- duplicated: job ids with more than one visible outcome on the gateways' reply streams.
A lean job's reply does not name its model: lean outcomes are counted whatever their model
(every fault test audits all of its cluster's models). A lean job dropped with no reply and
no record would leave no trace here: the fault tests also check that every caller got its one
correct answer.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from scheduler import keys
from tests.redis_cluster import sync_client

TERMINAL = {b"SUCCEEDED", b"FAILED", b"CANCELLED", b"EXPIRED", b"DEAD_LETTERED"}


@dataclass
class Ledger:
    accepted: int = 0
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    states: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        states = ", ".join(f"{k} {v}" for k, v in sorted(self.states.items()))
        return (f"accepted {self.accepted}, completed {self.completed}, lost {self.lost}, "
                f"duplicated {self.duplicated} ({states})")


def _jobs(r: redis.Redis, model: str) -> dict[str, dict[bytes, bytes]]:
    template = keys.job(model, "")
    return {k.decode().removeprefix(template): r.hgetall(k)
            for k in r.scan_iter(match=keys.job(model, "*"), count=1000)}


def _pending(r: redis.Redis, model: str) -> int:
    left = int(r.zcard(keys.delayed(model)))
    for level in keys.LEVELS:
        stream = keys.stream(model, level)
        if r.exists(stream):
            left += int(r.xpending(stream, keys.GROUP)["pending"])
    for key in r.scan_iter(match=keys.backlog(model, "*", "*")):
        left += int(r.llen(key))
    return left


def _replies(r: redis.Redis) -> tuple[Counter[str], dict[str, bytes]]:
    """How many outcomes each job id has on the reply streams, and each one's last state."""
    seen: Counter[str] = Counter()
    states: dict[str, bytes] = {}
    for stream in r.scan_iter(match=keys.reply_stream("*", "*")):
        for _, fields in r.xrange(stream):
            job_id = fields[b"job"].decode()
            seen[job_id] += 1
            states[job_id] = fields.get(b"state", b"?")
    return seen, states


def _lean_queued(r: redis.Redis, model: str) -> set[str]:
    """Lean jobs whose entry is still in one of the model's streams (no cancel mark)."""
    left = set()
    for level in keys.LEVELS:
        for _, fields in r.xrange(keys.stream(model, level)):
            job_id = fields[b"job"].decode()
            if b"env" in fields and not r.exists(keys.job(model, job_id)):
                left.add(job_id)
    return left


def audit(r: redis.Redis, models: Iterable[str], *, quiet_s: float = 30.0) -> Ledger:
    """Waits (up to quiet_s) until no audited job is QUEUED or RUNNING and no lean job is
    left in a stream, then counts."""
    models = list(models)
    deadline = time.monotonic() + quiet_s
    while True:
        jobs = {(m, j): f for m in models for j, f in _jobs(r, m).items()}
        open_jobs = [f for f in jobs.values() if f.get(b"state") not in TERMINAL]
        lean_left = {j for m in models for j in _lean_queued(r, m)}
        if not (open_jobs or lean_left) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    replies, last_state = _replies(r)
    hashed = {j for _, j in jobs}
    lean_done = {j for j in replies if j not in hashed and j not in lean_left}
    ledger = Ledger(accepted=len(jobs) + len(lean_done) + len(lean_left))
    for fields in jobs.values():
        state = fields.get(b"state", b"?").decode()
        ledger.states[state] += 1
        if state.encode() in TERMINAL:
            ledger.completed += 1
        else:
            ledger.lost += 1
    for job_id in lean_done:
        ledger.states[last_state[job_id].decode()] += 1
        ledger.completed += 1
    if lean_left:
        ledger.states["QUEUED"] += len(lean_left)
    ledger.lost += len(lean_left) + sum(_pending(r, m) for m in models)
    ledger.duplicated = sum(n - 1 for n in replies.values() if n > 1)
    return ledger


def check(redis_url: str, name: str, models: Iterable[str], quiet_s: float = 30.0) -> Ledger:
    """audit(), printed as the fault suite reports it, with zero loss and zero duplicates."""
    with sync_client(redis_url) as r:
        ledger = audit(r, models, quiet_s=quiet_s)
    print(f"\n[fault {name}] {ledger}")
    assert ledger.lost == 0, f"{name}: lost jobs: {ledger}"
    assert ledger.duplicated == 0, f"{name}: duplicated outcomes: {ledger}"
    return ledger
