"""Every Redis key of maas, built in this one module.

Keys of one model share the hash tag `{m:<model>}` so a Redis Cluster keeps each model's
queue in one slot (the Lua scripts touch several of them at once).

| key                               | type   | owner              | TTL                          |
|-----------------------------------|--------|--------------------|------------------------------|
| maas:{m:M}:stream                 | STREAM | gateway (XADD via SUBMIT), worker group `workers` | none; entries XDEL'd once done |
| maas:{m:M}:job:ID                 | HASH   | queue scripts      | none while live; result_ttl after a terminal state |
| maas:{m:M}:idem:TENANT:KEY        | STRING | SUBMIT             | 24 h                         |
| maas:{m:M}:dead                   | STREAM | REAP / START (dead letters) | MAXLEN ~ 10000       |
| maas:{m:M}:model                  | HASH   | registry: `next`, `latest`, `v:N` → ModelVersion bytes | none |
| maas:models                       | SET    | registry: every model name | none                 |
| maas:reply:GATEWAY                | STREAM | COMPLETE / START / REAP write; one gateway reads | refreshed 1 h; MAXLEN ~ 10000 |
| maas:worker:ID                    | STRING | worker heartbeat (WorkerHeartbeat bytes) | 3 heartbeats |
"""

from __future__ import annotations

PREFIX = "maas"
GROUP = "workers"  # the consumer group of every model stream
REAPER_CONSUMER = "reaper"


def model_tag(model: str) -> str:
    """The key prefix (with hash tag) of one model's keys."""
    return f"{PREFIX}:{{m:{model}}}"


def stream(model: str) -> str:
    return f"{model_tag(model)}:stream"


def job(model: str, job_id: str) -> str:
    return f"{model_tag(model)}:job:{job_id}"


def idempotency(model: str, tenant: str, key: str) -> str:
    return f"{model_tag(model)}:idem:{tenant}:{key}"


def dead_letters(model: str) -> str:
    return f"{model_tag(model)}:dead"


def model_record(model: str) -> str:
    return f"{model_tag(model)}:model"


def models() -> str:
    return f"{PREFIX}:models"


def reply_stream(gateway_id: str) -> str:
    return f"{PREFIX}:reply:{gateway_id}"


def worker(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}"


def workers_pattern() -> str:
    return f"{PREFIX}:worker:*"
