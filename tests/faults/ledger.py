"""The zero-loss audit every fault test ends with: accepted / completed / lost / duplicated,
read from the final Redis state (the truth, not the client's view) once the queue is quiet.

- accepted: job records of the audited models (each is a request the queue accepted);
- completed: those in exactly one terminal state;
- lost: accepted jobs still QUEUED/RUNNING at quiescence, or anything left pending in a
  stream, a backlog or the delayed set;
- duplicated: job ids with more than one visible outcome on the gateways' reply streams.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from scheduler import keys

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


def _reply_counts(r: redis.Redis) -> Counter[str]:
    seen: Counter[str] = Counter()
    for stream in r.scan_iter(match=keys.reply_stream("*")):
        for _, fields in r.xrange(stream):
            seen[fields[b"job"].decode()] += 1
    return seen


def audit(r: redis.Redis, models: Iterable[str], *, quiet_s: float = 30.0) -> Ledger:
    """Waits (up to quiet_s) until no audited job is QUEUED or RUNNING, then counts."""
    models = list(models)
    deadline = time.monotonic() + quiet_s
    while True:
        jobs = {(m, j): f for m in models for j, f in _jobs(r, m).items()}
        open_jobs = [f for f in jobs.values() if f.get(b"state") not in TERMINAL]
        if not open_jobs or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    ledger = Ledger(accepted=len(jobs))
    for fields in jobs.values():
        state = fields.get(b"state", b"?").decode()
        ledger.states[state] += 1
        if state.encode() in TERMINAL:
            ledger.completed += 1
        else:
            ledger.lost += 1
    ledger.lost += sum(_pending(r, m) for m in models)
    ledger.duplicated = sum(n - 1 for n in _reply_counts(r).values() if n > 1)
    return ledger


def check(redis_url: str, name: str, models: Iterable[str], quiet_s: float = 30.0) -> Ledger:
    """audit(), printed as the fault suite reports it, with zero loss and zero duplicates."""
    with redis.Redis.from_url(redis_url) as r:
        ledger = audit(r, models, quiet_s=quiet_s)
    print(f"\n[fault {name}] {ledger}")
    assert ledger.lost == 0, f"{name}: lost jobs: {ledger}"
    assert ledger.duplicated == 0, f"{name}: duplicated outcomes: {ledger}"
    return ledger
