"""The model registry in Redis: versions of each model as ModelVersion protobufs.

Versions are immutable once written; readers cache them and check every second that they
still exist (a version can be deleted). `latest` and aliases move: an alias (`production` →
version N) is set, moved and deleted atomically by Lua scripts that keep every alias on an
existing version, and is read with its version in one step, never cached, so a request that
names it runs on the old or the new version. An unloaded model (Triton's repository
extension) serves no inference until it is loaded again.
Models are stored under their id (`<tenant>/<name>`, or `<name>` in the shared catalog, see
scheduler/keys.py); `visible` and `resolve_visible` are what one tenant may see and run:
its own models, then the shared catalog.
"""

from __future__ import annotations

import time
from typing import cast

import redis.asyncio as aioredis

from maas.errors import (
    FieldViolation,
    InvalidArgument,
    ModelNotFound,
    ModelUnloaded,
    ModelVerifying,
    ModelVersionInUse,
    ModelVersionNotFound,
    shown,
)
from maas.v1.model_service_pb2 import Model, ModelVersion, ModelVersionState
from scheduler import keys, scripts
from scheduler.model_aliases import Aliases, _aliases
from scheduler.model_names import (
    _VERSION,
    MAX_VERSIONS_SHOWN,
    RESERVED_ALIASES,
    _listed,
    _shown,
    check_alias,
    check_model_id,
    check_model_name,
    is_alias,
)
from scheduler.model_states import check_state, is_archive, is_servable
from scheduler.redis_types import Fields
from scheduler.verification import VerificationQueue

LATEST_CACHE_S = 1.0
MAX_CACHED_IDS = 10_000

__all__ = ["LATEST_CACHE_S", "MAX_CACHED_IDS", "MAX_VERSIONS_SHOWN", "RESERVED_ALIASES",
           "ModelRegistry", "check_alias", "check_model_id", "check_model_name", "check_state",
           "is_alias", "is_archive", "is_servable"]

class ModelRegistry(Aliases):
    """Reads and writes model versions; caches immutable versions in the process."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._versions: dict[tuple[str, str], tuple[float, ModelVersion]] = {}
        self._latest: dict[str, tuple[float, str]] = {}
        self._unloaded: dict[str, tuple[float, bool]] = {}
        self._alias_get = scripts.register(client, "model_alias_get")
        self._alias_set = scripts.register(client, "model_alias_set")
        self._version_delete = scripts.register(client, "model_version_delete")
        self._version_state = scripts.register(client, "model_version_state")
        self._version_failure = scripts.register(client, "model_version_failure")
        self.verification = VerificationQueue(client)
        # Whether a model id exists, as last seen (ids a tenant asked for that may not exist).
        self._exists: dict[str, tuple[float, bool]] = {}

    async def add_version(self, version: ModelVersion, is_latest: bool = True) -> ModelVersion:
        """Assigns the next version number and stores it, as latest unless `is_latest` is
        False (an archive being verified becomes latest when it passes)."""
        key = keys.model_record(version.model)
        number = await self._redis.hincrby(key, "next", 1)
        # Listed before its version exists (the artifact GC reads the list: a version it
        # cannot see would lose its artifacts), and apart from the MULTI below: the list is
        # in another slot of a Redis Cluster. A crash in between leaves a listed model whose
        # record holds no version yet, as a crash after HINCRBY always could.
        await self._redis.sadd(keys.models(), version.model)
        stored = ModelVersion()
        stored.CopyFrom(version)
        stored.version = str(number)
        stored.create_time.FromNanoseconds(time.time_ns())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={f"v:{number}": stored.SerializeToString()})
            # latest only moves forward, even if two registrations race.
            if is_latest:
                pipe.eval("local cur = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0') "
                          "if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], "
                          "'latest', ARGV[1]) end return 1", 1, key, number)
            await pipe.execute()
        self._versions[(stored.model, stored.version)] = (time.monotonic(), stored)
        if is_latest:
            self._latest[stored.model] = (time.monotonic(), stored.version)
        self._exists[stored.model] = (time.monotonic(), True)
        return stored

    async def set_state(self, version: ModelVersion, state: ModelVersionState.ValueType,
                        reason: str = "") -> bool:
        """Stores `version` with a new state (READY also makes it latest when it is the
        newest); False when the version was deleted meanwhile."""
        changed = ModelVersion()
        changed.CopyFrom(version)
        changed.state, changed.state_reason = state, reason
        outcome = await self._version_state(
            keys=[keys.model_record(version.model)],
            args=[version.version, changed.SerializeToString(),
                  "1" if state == ModelVersionState.MODEL_VERSION_STATE_READY else "0"])
        self._versions.pop((version.model, version.version), None)
        self._latest.pop(version.model, None)
        return cast("bytes", outcome) == b"ok"

    async def record_failure(self, version: ModelVersion, reason: str, threshold: int) -> int:
        """Counts a runner timeout or crash of a version; at `threshold` the version is
        QUARANTINED with `reason`. Returns the count."""
        quarantined = ModelVersion()
        quarantined.CopyFrom(version)
        quarantined.state = ModelVersionState.MODEL_VERSION_STATE_QUARANTINED
        quarantined.state_reason = reason
        count = await self._version_failure(
            keys=[keys.model_record(version.model)],
            args=[version.version, threshold, quarantined.SerializeToString()])
        self._versions.pop((version.model, version.version), None)
        return int(cast("int", count))

    async def fresh_version(self, model: str, version: str) -> ModelVersion | None:
        """A version as stored now (no cache); None when it does not exist."""
        raw = cast("bytes | None",
                   await self._redis.hget(keys.model_record(model), f"v:{version}"))
        if raw is None:
            return None
        found = ModelVersion.FromString(raw)
        self._versions[(model, version)] = (time.monotonic(), found)
        self._latest.pop(model, None)
        return found

    async def visible_id(self, tenant: str, name: str) -> str:
        """The id `name` means to `tenant`: its own model, else the shared one of that name.

        A name no model can have is INVALID_ARGUMENT (field `model_name`), without a round trip.
        """
        check_model_name(name, field="model_name")
        own = keys.model_id(tenant, name)
        if not tenant or await self._model_exists(own):
            return own
        return name

    async def resolve_visible(self, tenant: str, name: str, version: str = "") -> ModelVersion:
        """`resolve` of what `name` means to `tenant` (own model, else shared)."""
        return await self.resolve(await self.visible_id(tenant, name), version)

    async def visible(self, tenant: str) -> dict[str, str]:
        """name → id of every model `tenant` may see: the shared catalog, then its own
        (which hide shared ones of the same name)."""
        ids = [(*keys.split_model_id(i), i) for i in await self.model_names()]
        found = {name: i for owner, name, i in ids if not owner}
        if tenant:
            found.update({name: i for owner, name, i in ids if owner == tenant})
        return found

    async def _model_exists(self, model: str) -> bool:
        now = time.monotonic()
        seen = self._exists.get(model)
        if seen and now - seen[0] < LATEST_CACHE_S:
            return seen[1]
        if len(self._exists) > MAX_CACHED_IDS:  # names a client made up must not pile up
            self._exists.clear()
        found = bool(await self._redis.exists(keys.model_record(model)))
        self._exists[model] = (now, found)
        return found

    async def resolve(self, model: str, version: str = "") -> ModelVersion:
        """The version asked for (latest when empty) of a model id; NOT_FOUND naming what
        exists.

        An id no model can have is INVALID_ARGUMENT (field `model_name`), and a version that
        is neither a positive integer nor an alias is NOT_FOUND, both without a round trip.
        """
        check_model_id(model, field="model_name")
        if version and not _VERSION.fullmatch(version):
            if not is_alias(version):
                raise ModelVersionNotFound(
                    f"model {_shown(model)} has no version {shown(version)}: versions are 1, "
                    "2, 3, ... or an alias (empty = latest)")
            return await self._resolve_alias(model, version)
        if not version:
            version = await self._latest_version(model)
        cached = self._versions.get((model, version))
        if cached is not None and time.monotonic() - cached[0] < LATEST_CACHE_S:
            return cached[1]
        raw = cast("bytes | None",
                   await self._redis.hget(keys.model_record(model), f"v:{version}"))
        if raw is None:
            if not await self._redis.exists(keys.model_record(model)):
                raise ModelNotFound(f"model {_shown(model)} is not registered")
            raise ModelVersionNotFound(
                f"model {_shown(model)} has no version {version}; "
                f"versions: {_listed(await self.version_numbers(model))}")
        found = ModelVersion.FromString(raw)  # its state may have changed (verification)
        self._versions[(model, version)] = (time.monotonic(), found)
        return found

    async def delete_version(self, model: str, version: str) -> ModelVersion:
        """Deletes a version's record and returns it (its artifacts stay until
        scheduler/artifact_gc.py finds them unreferenced). FAILED_PRECONDITION
        (MODEL_VERSION_IN_USE) while an alias points to the version or when it is the model's
        only one."""
        if not _VERSION.fullmatch(version):
            raise InvalidArgument(f"version {shown(version)} is not a version number (1, 2, 3, "
                                  "...); delete versions by number, not by alias",
                                  violations=(FieldViolation("version", "not a number"),))
        # Read first: what a version references never changes (only its state does).
        raw = cast("bytes | None",
                   await self._redis.hget(keys.model_record(model), f"v:{version}"))
        reply = cast("list[bytes]", await self._version_delete(
            keys=[keys.model_record(model)], args=[version]))
        outcome, named = reply[0].decode(), [a.decode() for a in reply[1:]]
        if outcome == "nomodel":
            raise ModelNotFound(f"model {_shown(model)} is not registered")
        if outcome == "missing":
            raise ModelVersionNotFound(f"model {_shown(model)} has no version {version}; "
                                       f"versions: {_listed(await self.version_numbers(model))}")
        if outcome == "aliased":
            listed = ", ".join(repr(a) for a in named)
            raise ModelVersionInUse(
                f"version {version} of model {_shown(model)} cannot be deleted: alias "
                f"{listed} points to it; move the alias to another version (SetModelAlias) or "
                "delete it (DeleteModelAlias) first")
        if outcome == "only":
            raise ModelVersionInUse(f"version {version} is the only version of model "
                                    f"{_shown(model)} and cannot be deleted")
        self._versions.pop((model, version), None)
        self._latest.pop(model, None)
        return ModelVersion.FromString(raw or b"")

    async def set_unloaded(self, model: str, unloaded: bool) -> None:
        """Marks a model unloaded (no inference) or loaded again; NOT_FOUND when unknown."""
        key = keys.model_record(model)
        if not await self._redis.exists(key):
            raise ModelNotFound(f"model {_shown(model)} is not registered")
        await (self._redis.hset(key, "unloaded", "1") if unloaded
               else self._redis.hdel(key, "unloaded"))
        self._unloaded[model] = (time.monotonic(), unloaded)

    async def is_unloaded(self, model: str) -> bool:
        """As last seen within LATEST_CACHE_S (this process sees its own changes at once)."""
        hit = self._unloaded.get(model)
        if hit and time.monotonic() - hit[0] < LATEST_CACHE_S:
            return hit[1]
        if len(self._unloaded) > MAX_CACHED_IDS:
            self._unloaded.clear()
        found = bool(await self._redis.hexists(keys.model_record(model), "unloaded"))
        self._unloaded[model] = (time.monotonic(), found)
        return found

    async def check_serving(self, version: ModelVersion) -> None:
        """UNAVAILABLE (MODEL_UNLOADED) when the version's model is unloaded; the version's
        own state when it may not serve (check_state)."""
        if await self.is_unloaded(version.model):
            name = keys.split_model_id(version.model)[1]
            raise ModelUnloaded(
                f"model {name!r} is unloaded (RepositoryModelUnload) and serves no inference; "
                f"load it again with RepositoryModelLoad (tritonclient: "
                f"client.load_model({name!r}))")
        check_state(version)

    async def _latest_version(self, model: str) -> str:
        hit = self._latest.get(model)
        if hit and time.monotonic() - hit[0] < LATEST_CACHE_S:
            return hit[1]
        raw = cast("bytes | None", await self._redis.hget(keys.model_record(model), "latest"))
        if raw is None:
            if await self._redis.exists(keys.model_record(model)):
                raise ModelVerifying(f"model {_shown(model)} has no servable version yet: its "
                                     "archives are being verified or were rejected (GetModel "
                                     "shows each version's state and reason)")
            raise ModelNotFound(f"model {_shown(model)} is not registered")
        latest = raw.decode()
        self._latest[model] = (time.monotonic(), latest)
        return latest

    async def version_numbers(self, model: str) -> list[str]:
        fields = cast("list[bytes]", await self._redis.hkeys(keys.model_record(model)))
        return sorted((f.decode()[2:] for f in fields if f.startswith(b"v:")), key=int)

    async def get_model(self, model: str) -> Model:
        record = cast("Fields", await self._redis.hgetall(keys.model_record(model)))
        if not record:
            raise ModelNotFound(f"model {_shown(model)} is not registered")
        versions = sorted((ModelVersion.FromString(v) for k, v in record.items()
                           if k.startswith(b"v:")), key=lambda v: int(v.version))
        return Model(name=model, versions=versions,
                     latest_version=record.get(b"latest", b"").decode(),
                     aliases=_aliases(record), unloaded=b"unloaded" in record)

    async def model_names(self) -> list[str]:
        names = cast("set[bytes]", await self._redis.smembers(keys.models()))
        return sorted(m.decode() for m in names)
