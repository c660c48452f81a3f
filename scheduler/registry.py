"""The model registry in Redis: versions of each model as ModelVersion protobufs.

Versions are immutable once written, so readers cache them forever; only `latest` moves.
Models are stored under their id (`<tenant>/<name>`, or `<name>` in the shared catalog, see
scheduler/keys.py); `visible` and `resolve_visible` are what one tenant may see and run:
its own models, then the shared catalog.
"""

from __future__ import annotations

import re
import time
from typing import cast

import redis.asyncio as aioredis

from maas.errors import (
    FieldViolation,
    InvalidArgument,
    ModelNotFound,
    ModelVersionNotFound,
    shown,
)
from maas.v1.model_service_pb2 import Model, ModelVersion
from scheduler import keys
from scheduler.redis_types import Fields

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ID = re.compile(rf"(?:{_NAME.pattern}/)?{_NAME.pattern}")
_VERSION = re.compile(r"[1-9][0-9]{0,18}")  # versions are 1, 2, 3, ...
LATEST_CACHE_S = 1.0
MAX_CACHED_IDS = 10_000
MAX_VERSIONS_SHOWN = 10


def check_model_name(name: str, field: str = "name") -> None:
    """INVALID_ARGUMENT (violation on `field`) unless `name` can be a model's name."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"model name {shown(name)} is not valid: use 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit",
            violations=(FieldViolation(field, "invalid model name"),))


def check_model_id(model_id: str, field: str = "model_name") -> None:
    """As check_model_name, for an id (`<tenant>/<name>` or `<name>`)."""
    if not _ID.fullmatch(model_id):
        check_model_name(model_id.rpartition("/")[2], field)
        check_model_name(model_id, field)  # a tenant part that no tenant can have


def _shown(model_id: str) -> str:
    """An id as its owner knows it: the name, without the tenant."""
    return repr(keys.split_model_id(model_id)[1])


def _listed(versions: list[str]) -> str:
    if len(versions) <= MAX_VERSIONS_SHOWN:
        return ", ".join(versions)
    half = MAX_VERSIONS_SHOWN // 2
    return f"{', '.join(versions[:half])}, …, {', '.join(versions[-half:])}"


class ModelRegistry:
    """Reads and writes model versions; caches immutable versions in the process."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._versions: dict[tuple[str, str], ModelVersion] = {}
        self._latest: dict[str, tuple[float, str]] = {}
        # Whether a model id exists, as last seen (ids a tenant asked for that may not exist).
        self._exists: dict[str, tuple[float, bool]] = {}

    async def add_version(self, version: ModelVersion) -> ModelVersion:
        """Assigns the next version number and stores it as latest (one transaction each)."""
        key = keys.model_record(version.model)
        number = await self._redis.hincrby(key, "next", 1)
        stored = ModelVersion()
        stored.CopyFrom(version)
        stored.version = str(number)
        stored.create_time.FromNanoseconds(time.time_ns())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={f"v:{number}": stored.SerializeToString()})
            # latest only moves forward, even if two registrations race.
            pipe.eval("local cur = tonumber(redis.call('HGET', KEYS[1], 'latest') or '0') "
                      "if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'latest', "
                      "ARGV[1]) end return 1", 1, key, number)
            pipe.sadd(keys.models(), version.model)
            await pipe.execute()
        self._versions[(stored.model, stored.version)] = stored
        self._latest[stored.model] = (time.monotonic(), stored.version)
        self._exists[stored.model] = (time.monotonic(), True)
        return stored

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
        is not a positive integer is NOT_FOUND, both without a round trip to Redis.
        """
        check_model_id(model, field="model_name")
        if version and not _VERSION.fullmatch(version):
            raise ModelVersionNotFound(
                f"model {_shown(model)} has no version {shown(version)}: versions are 1, 2, 3, "
                "... (empty = latest)")
        if not version:
            version = await self._latest_version(model)
        cached = self._versions.get((model, version))
        if cached is not None:
            return cached
        raw = cast("bytes | None",
                   await self._redis.hget(keys.model_record(model), f"v:{version}"))
        if raw is None:
            if not await self._redis.exists(keys.model_record(model)):
                raise ModelNotFound(f"model {_shown(model)} is not registered")
            raise ModelVersionNotFound(
                f"model {_shown(model)} has no version {version}; "
                f"versions: {_listed(await self.version_numbers(model))}")
        found = ModelVersion.FromString(raw)
        self._versions[(model, version)] = found
        return found

    async def _latest_version(self, model: str) -> str:
        hit = self._latest.get(model)
        if hit and time.monotonic() - hit[0] < LATEST_CACHE_S:
            return hit[1]
        raw = cast("bytes | None", await self._redis.hget(keys.model_record(model), "latest"))
        if raw is None:
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
        return Model(name=model, versions=versions, latest_version=record[b"latest"].decode())

    async def model_names(self) -> list[str]:
        names = cast("set[bytes]", await self._redis.smembers(keys.models()))
        return sorted(m.decode() for m in names)
