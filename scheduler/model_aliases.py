"""A model's aliases (`production` → version N): read with their version in one step, set,
moved and deleted by Lua scripts that keep every alias on an existing version."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from maas.errors import (
    FieldViolation,
    InvalidArgument,
    ModelAliasNotFound,
    ModelNotFound,
    ModelVersionNotFound,
    shown,
)
from maas.v1.model_service_pb2 import ModelVersion
from scheduler import keys
from scheduler.model_names import _shown, check_alias
from scheduler.redis_types import Fields


class Aliases:
    """The alias half of ModelRegistry (which sets these attributes and `resolve`)."""

    _redis: aioredis.Redis
    _alias_get: AsyncScript
    _alias_set: AsyncScript
    _versions: dict[tuple[str, str], tuple[float, ModelVersion]]

    if TYPE_CHECKING:  # ModelRegistry's: an alias is set on a version resolved first
        async def resolve(self, model: str, version: str = "") -> ModelVersion: ...

    async def _resolve_alias(self, model: str, alias: str) -> ModelVersion:
        reply = cast("list[bytes]", await self._alias_get(keys=[keys.model_record(model)],
                                                          args=[alias]))
        if reply[0] == b"nomodel":
            raise ModelNotFound(f"model {_shown(model)} is not registered")
        if reply[0] == b"missing":
            known = ", ".join(sorted(await self.aliases(model))) or "none"
            raise ModelAliasNotFound(f"model {_shown(model)} has no version or alias "
                                     f"{shown(alias)}; its aliases: {known}")
        version = reply[0].decode()
        found = ModelVersion.FromString(reply[1])
        self._versions[(model, version)] = (time.monotonic(), found)
        return found

    async def alias_versions(self, model: str) -> set[str]:
        """The version numbers a model's aliases point at (its versions are not read)."""
        found: set[str] = set()
        async for _, value in self._redis.hscan_iter(keys.model_record(model), match="a:*"):
            found.add(cast("bytes", value).decode())
        return found

    async def aliases(self, model: str) -> dict[str, str]:
        """alias → version number of a model."""
        record = cast("Fields", await self._redis.hgetall(keys.model_record(model)))
        return _aliases(record)

    async def set_alias(self, model: str, alias: str, version: str) -> str:
        """Points `alias` at `version` (a number, or an alias resolved now); returns the
        version it pointed to before ("" when new)."""
        check_alias(alias)
        if not version:
            raise InvalidArgument("version is required: the version number the alias names",
                                  violations=(FieldViolation("version", "empty"),))
        target = (await self.resolve(model, version)).version
        reply = cast("list[bytes]", await self._alias_set(keys=[keys.model_record(model)],
                                                          args=[alias, target]))
        if reply[0] == b"nomodel":
            raise ModelNotFound(f"model {_shown(model)} is not registered")
        if reply[0] == b"missing":  # deleted since resolve
            raise ModelVersionNotFound(f"model {_shown(model)} has no version {target}")
        return reply[1].decode()

    async def delete_alias(self, model: str, alias: str) -> None:
        check_alias(alias)
        if not await self._redis.hdel(keys.model_record(model), f"a:{alias}"):
            if not await self._redis.exists(keys.model_record(model)):
                raise ModelNotFound(f"model {_shown(model)} is not registered")
            raise ModelAliasNotFound(f"model {_shown(model)} has no alias {shown(alias)}")


def _aliases(record: Fields) -> dict[str, str]:
    return {k.decode()[2:]: v.decode() for k, v in record.items() if k.startswith(b"a:")}
