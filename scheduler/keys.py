"""Every Redis key of maas, built in this one module.

Keys of one model share the hash tag `{m:<model>}` so a Redis Cluster keeps each model's
queue in one slot (the Lua scripts touch several of them at once).

Tenants: below the gateway a model or dataset is named by its id, `<tenant>/<name>`, or just
`<name>` for tenant "" (auth off, and the shared catalog). Names cannot hold '/', so the id
splits one way, and the whole id sits inside the hash tag: `{m:acme/digits}`.

Scripts receive every key they touch in KEYS, built here: a Redis Cluster routes a script by
its KEYS and refuses one that reaches a slot it did not declare. A script that learns the
last part of a key only from data it reads in Redis (a job id in a stream entry, a backlog
list, the delayed set, the forming set or a tenant's active set; a tenant in a job hash)
receives that key's *template* instead: the key built here with that last part empty
(`job(model, "")`, `share(model, "")`, `backlog(model, level, "")`, `training_gang("")`),
which the script completes with `..`. A template keeps the hash tag, so the key it completes
lives in the slot the script declared. `queue_keys` is the block of one model's keys and
templates that the prelude's `queue_keys(i)` reads. One key name is data, not a template: a
job's `reply_to`, the reply stream (`reply_stream`) the gateway named at submit (in the job
hash, or in a lean job's stream entry), which COMPLETE, START, CLAIM, REAP and TRAIN_START
write to. A gateway keeps one reply stream per model it waits on, under that model's hash
tag, so the script that ends a job writes its reply in the slot it declared: the reply is
part of the same atomic step as the outcome, on one Redis and on a Cluster alike.

Sharded models (MAAS_MODEL_SHARDS, scheduler/shards.py): every key below that is built from a
model `M` is built from a *queue* name in the same way: `M` for a model's own queue (shard 0)
and `M#n` for its shard n, whose hash tag `{m:M#n}` puts that shard's streams, job hashes,
idempotency keys, shares, backlogs, delayed set, dead letters and reply streams in a slot of
their own. The model record (`{m:M}:model`) and generation streams stay the model's.

Key (type) — writer — TTL:
- maas:{m:M}:stream[:high|:low] (STREAM) — SUBMIT and SUBMIT_LEAN add by priority (a lean
  job's entry carries its envelope), as do RELEASE, PROMOTE, REDRIVE and the backlog refill;
  group `workers` consumes — none; done entries XDEL'd
- maas:{m:M}:job:ID (HASH) — queue scripts — none while live; result TTL once terminal (an
  inference job's). A lean job has none until REAP or RELEASE adopts it; CANCEL of a lean
  job leaves a cancel mark (`state` only, result TTL). Training jobs ended by TRAIN_UPDATE or
  TRAIN_CANCEL keep theirs
- maas:{m:M}:idem:TENANT:KEY (STRING) — SUBMIT — 24 h
- maas:{m:M}:receipt:ID (STRING) — SUBMIT_LEAN: the answers of the call whose first job is ID,
  so the call sent again adds nothing — 60 s (RECEIPT_TTL_MS)
- maas:{m:M}:share:TENANT (HASH) — queue scripts: `ready` (undelivered entries), `backlog`
  (jobs in the backlog lists) of a tenant's fair share — none
- maas:{m:M}:backlog:LEVEL:TENANT (LIST) — SUBMIT over the share cap; scripts move them to
  the stream as the tenant's entries are delivered — none
- maas:{m:M}:delayed (ZSET) — REAP: job id → Unix ms its retry backoff ends; PROMOTE — none
- maas:{m:M}:dead (STREAM) — START/CLAIM/REAP/TRAIN_START dead letters; REDRIVE removes —
  MAXLEN ~ 10000
- maas:{m:M}:model (HASH) — registry: `next`, `latest`, `v:N` → ModelVersion, `a:ALIAS` →
  version N (MODEL_ALIAS_SET / MODEL_VERSION_DELETE keep aliases and versions consistent),
  `unloaded` = 1 after RepositoryModelUnload, `fail:N` = runner timeouts and crashes of
  version N (MODEL_VERSION_FAILURE quarantines it at MAAS_QUARANTINE_AFTER) — none
- maas:models (SET) — registry: every model name — none
- maas:verify (STREAM) — the gateway adds a VerifyRequest per archive version it registers;
  workers read it in group `verifiers` (scheduler/verification.py), XACK + XDEL when the
  verdict is stored in the version — MAXLEN ~ 10000
- maas:{m:M}:reply:GATEWAY (STREAM) — COMPLETE/START/CLAIM/REAP/TRAIN_START; read by one
  gateway (its reader of model M) — 1 h, MAXLEN ~ 10000
- maas:{m:M}:gen:ID (STREAM) — the token events of one generation job (GenerationEvent,
  field `ev`): the worker XADDs one per sequence per decoding step, the gateway tails it —
  PEXPIRE result TTL at an attempt's first and last event, MAXLEN ~ 5000
- maas:{m:_train}:events:ID (STREAM) — training events of one job — MAXLEN ~ 100000
- maas:{m:_train}:index[:TENANT] (ZSET) — training job ids by creation time, per tenant — none
- maas:{m:_train}:active:TENANT (SET) — TRAIN_CREATE, when the tenant has a training quota:
  ids of its jobs queued or running; members that ended are dropped by the next TRAIN_CREATE
  — none
- maas:{m:_train}:gang:ID (HASH) — the gang of a multi-replica training job: size, state
  (FORMING, FORMED, BROKEN), gen (= attempt), rank:R → worker, beat:R → ms, addr (rendezvous
  host:port) — TRAIN_START opens it, GANG_* scripts — PEXPIRE gang timeout + lease, renewed
  by the ranks' beats; DEL'd when the gang ends
- maas:{m:_train}:forming (ZSET) — job ids of gangs forming, by formation deadline ms —
  TRAIN_START adds, GANG_JOIN / GANG_ABORT remove — none (stale members expire by score)
- maas:datasets (HASH) — dataset id (`<tenant>/<name>`) → Dataset — none
- maas:apikey:ID (HASH) — KeyStore: `sha256` of the key, `record` ApiKey — none (DEL = revoked)
- maas:apikeys (SET) — KeyStore: every key id — none
- maas:admin:bootstrap (STRING) — ADMIN_BOOTSTRAP: id of the admin key installed from
  MAAS_ADMIN_KEY_FILE (or of the admin key found in place); set once, the file's key is
  never installed again — none
- maas:rate:TENANT (HASH) — RATE_LIMIT: `tokens`, `ms` of the token bucket — 2 s past full
- maas:worker:ID (STRING) — worker heartbeat (WorkerHeartbeat) — 3 heartbeat periods
- maas:workers (ZSET) — worker heartbeat: worker id → when its record expires (Unix ms);
  readers drop the expired — none
- maas:upload:ID (STRING) — UploadLeases (scheduler/upload_leases.py): the random token of
  the stream writing resumable upload ID to the object store; SET NX, renewed while it
  receives, released by UPLOAD_LEASE — PX lease (30 s)
- maas:artifact:KIND:SHA:collecting (SET) — ArtifactCollector (scheduler/artifact_gc.py):
  a random token per collector about to delete weights/archive SHA, added before its final
  reference check, SREM'd once it deleted or spared it; registrations of SHA wait while the
  set exists — PX 300 s, renewed by each SADD
- maas:artifact:KIND:SHA:pending (SET) — registrations (PendingReferences): a random token
  per registration that stores SHA and has not yet written its version; SREM'd after —
  PX 1 h, renewed by each SADD
"""

from __future__ import annotations

PREFIX = "maas"
# The queue of training jobs; model names start with a letter or digit, so it cannot clash.
TRAINING_QUEUE = "_train"
GROUP = "workers"  # the consumer group of every model stream
TENANT_SEP = "/"  # never in a model, dataset or tenant name
REAPER_CONSUMER = "reaper"


# A sharded model's queue n (n >= 1) is named `<model>#<n>` (MAAS_MODEL_SHARDS); shard 0 is
# the model's own queue. '#' is in no model, tenant or dataset name, so the split is one way.
SHARD_SEP = "#"
MAX_SHARDS = 64


def shard_queue(model: str, shard: int) -> str:
    """The name of queue `shard` of a model: the model itself for shard 0."""
    return f"{model}{SHARD_SEP}{shard}" if shard else model


def queue_field(model: str, queue: str) -> str:
    """What a JobEnvelope's or a Delivery's `queue` holds for a job of `model` on `queue`:
    "" for the model's own queue."""
    return "" if queue == model else queue


def model_of_queue(queue: str) -> str:
    """The model id of a queue name (the name itself for an unsharded queue)."""
    return queue.partition(SHARD_SEP)[0]


def shard_of_queue(queue: str) -> int | None:
    """The shard number a queue name ends with: 0 for a model's own queue, None when the
    suffix is not a shard number (1 .. MAX_SHARDS - 1, written without leading zeros)."""
    _, sep, raw = queue.partition(SHARD_SEP)
    if not sep:
        return 0
    if not raw.isascii() or not raw.isdigit() or raw.startswith("0") or len(raw) > 2:
        return None
    return int(raw) if int(raw) < MAX_SHARDS else None


def model_tag(model: str) -> str:
    """The key prefix (with hash tag) of one model's keys."""
    return f"{PREFIX}:{{m:{model}}}"


def model_id(tenant: str, name: str) -> str:
    """The id of a tenant's model or dataset; the name itself for tenant ""."""
    return f"{tenant}{TENANT_SEP}{name}" if tenant else name


def split_model_id(model_id: str) -> tuple[str, str]:
    """(tenant, name) of an id; the tenant is "" for the shared namespace."""
    tenant, _, name = model_id.rpartition(TENANT_SEP)
    return tenant, name


# Priority streams of a model, highest first. v2 priority 1 is the highest, 2 the next,
# 0 the default (normal); 3 and above are low.
LEVELS = ("high", "normal", "low")


def level_of(priority: int) -> str:
    return "high" if priority == 1 else "normal" if priority in (0, 2) else "low"


def stream(model: str, level: str = "normal") -> str:
    """The model's stream of one priority level (normal keeps the plain name)."""
    return f"{model_tag(model)}:stream" + ("" if level == "normal" else f":{level}")


def job(model: str, job_id: str) -> str:
    return f"{model_tag(model)}:job:{job_id}"


def receipt(model: str, job_id: str) -> str:
    """A SUBMIT_LEAN call's answers, keyed by its first job id: a call sent again finds them."""
    return f"{model_tag(model)}:receipt:{job_id}"


def idempotency(model: str, tenant: str, key: str) -> str:
    return f"{model_tag(model)}:idem:{tenant}:{key}"


def backlog(model: str, level: str, tenant: str) -> str:
    """A tenant's jobs over its fair share at one priority level, waiting for a stream."""
    return f"{model_tag(model)}:backlog:{level}:{tenant}"


def queue_keys(model: str) -> list[str]:
    """The KEYS block the prelude's `queue_keys(i)` reads (scheduler/lua/common.lua): the
    model's three streams (high, normal, low), then the templates of its job hashes, of its
    tenants' share hashes and of their backlog lists (high, normal, low)."""
    return [*(stream(model, level) for level in LEVELS), job(model, ""), share(model, ""),
            *(backlog(model, level, "") for level in LEVELS)]


def delayed(model: str) -> str:
    return f"{model_tag(model)}:delayed"


def share(model: str, tenant: str) -> str:
    return f"{model_tag(model)}:share:{tenant}"


def dead_letters(model: str) -> str:
    return f"{model_tag(model)}:dead"


def model_record(model: str) -> str:
    return f"{model_tag(model)}:model"


def verify_stream() -> str:
    return f"{PREFIX}:verify"


def models() -> str:
    return f"{PREFIX}:models"


def reply_stream(model: str, gateway_id: str) -> str:
    """Where the jobs of `model` that gateway `gateway_id` waits on are answered: in the
    model's slot, beside the job the answering script ends."""
    return f"{model_tag(model)}:reply:{gateway_id}"


def worker(worker_id: str) -> str:
    return f"{PREFIX}:worker:{worker_id}"


def workers_index() -> str:
    return f"{PREFIX}:workers"


def generation_events(model: str, job_id: str) -> str:
    """The token events of one generation job, in its model's slot."""
    return f"{model_tag(model)}:gen:{job_id}"


def training_events(job_id: str) -> str:
    return f"{model_tag(TRAINING_QUEUE)}:events:{job_id}"


def training_index(tenant: str = "") -> str:
    index = f"{model_tag(TRAINING_QUEUE)}:index"
    return f"{index}:{tenant}" if tenant else index


def training_active(tenant: str) -> str:
    return f"{model_tag(TRAINING_QUEUE)}:active:{tenant}"


def training_gang(job_id: str) -> str:
    return f"{model_tag(TRAINING_QUEUE)}:gang:{job_id}"


def training_forming() -> str:
    return f"{model_tag(TRAINING_QUEUE)}:forming"


def datasets() -> str:
    return f"{PREFIX}:datasets"


# The API-key store shares one hash tag: ADMIN_BOOTSTRAP and the store's MULTIs touch a
# key's hash, the set of ids and the bootstrap marker together, which a Redis Cluster allows
# only within one slot. Before the tag they were named without it (LEGACY_AUTH_KEYS);
# KeyStore.adopt_untagged renames those at a gateway's start.
AUTH_TAG = f"{PREFIX}:{{auth}}"


def api_key(key_id: str) -> str:
    return f"{AUTH_TAG}:apikey:{key_id}"


def api_keys() -> str:
    return f"{AUTH_TAG}:apikeys"


def admin_bootstrap() -> str:
    return f"{AUTH_TAG}:admin:bootstrap"


def untagged_auth_keys(key_ids: list[str]) -> dict[str, str]:
    """The names the key store had before AUTH_TAG -> its names now."""
    return {f"{PREFIX}:apikeys": api_keys(), f"{PREFIX}:admin:bootstrap": admin_bootstrap(),
            **{f"{PREFIX}:apikey:{k}": api_key(k) for k in key_ids}}


def rate_bucket(tenant: str) -> str:
    return f"{PREFIX}:rate:{tenant}"


def upload_lease(upload_id: str) -> str:
    return f"{PREFIX}:upload:{upload_id}"


def artifact_collecting(kind: str, sha256: str) -> str:
    return f"{PREFIX}:artifact:{kind}:{sha256}:collecting"


def artifact_pending(kind: str, sha256: str) -> str:
    return f"{PREFIX}:artifact:{kind}:{sha256}:pending"
