"""Every Redis key of maas, built in this one module.

Keys of one model share the hash tag `{m:<model>}` so a Redis Cluster keeps each model's
queue in one slot (the Lua scripts touch several of them at once).

Key (type) — writer — TTL:
- maas:{m:M}:stream (STREAM) — SUBMIT adds, group `workers` consumes — none; done entries XDEL'd
- maas:{m:M}:job:ID (HASH) — queue scripts — none while live; result TTL once terminal
- maas:{m:M}:idem:TENANT:KEY (STRING) — SUBMIT — 24 h
- maas:{m:M}:dead (STREAM) — START/REAP dead letters — MAXLEN ~ 10000
- maas:{m:M}:model (HASH) — registry: `next`, `latest`, `v:N` → ModelVersion — none
- maas:models (SET) — registry: every model name — none
- maas:reply:GATEWAY (STREAM) — COMPLETE/START/REAP; read by one gateway — 1 h, MAXLEN ~ 10000
- maas:{m:_train}:events:ID (STREAM) — training events of one job — MAXLEN ~ 100000
- maas:{m:_train}:index (ZSET) — training job ids by creation time — none
- maas:datasets (HASH) — dataset name → Dataset — none
- maas:worker:ID (STRING) — worker heartbeat (WorkerHeartbeat) — 3 heartbeat periods
"""

from __future__ import annotations

PREFIX = "maas"
# The queue of training jobs; model names start with a letter or digit, so it cannot clash.
TRAINING_QUEUE = "_train"
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


def training_events(job_id: str) -> str:
    return f"{model_tag(TRAINING_QUEUE)}:events:{job_id}"


def training_index() -> str:
    return f"{model_tag(TRAINING_QUEUE)}:index"


def datasets() -> str:
    return f"{PREFIX}:datasets"
