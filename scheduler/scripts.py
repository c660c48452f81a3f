"""The queue's Lua scripts, each loaded with the shared prelude `lua/common.lua`.

Each script's header lists its KEYS and ARGV (`-- KEYS[n] = ...`); every key it touches comes
from KEYS, built by scheduler/keys.py (tests/unit/test_lua_keys.py checks both)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript


def _source(name: str) -> str:
    lua = files("scheduler") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def register(client: aioredis.Redis, name: str) -> AsyncScript:
    """One script (with the prelude) outside the queue's set, e.g. RATE_LIMIT."""
    return client.register_script(_source(name))


@dataclass(frozen=True)
class Scripts:
    """The registered scripts (EVALSHA, reloaded by redis-py on NOSCRIPT)."""

    submit: AsyncScript
    submit_lean: AsyncScript
    start: AsyncScript
    claim: AsyncScript
    extend: AsyncScript
    complete: AsyncScript
    reap: AsyncScript
    promote: AsyncScript
    release: AsyncScript
    cancel: AsyncScript
    redrive: AsyncScript
    train_create: AsyncScript
    train_update: AsyncScript
    train_cancel: AsyncScript

    @classmethod
    def register(cls, client: aioredis.Redis) -> Scripts:
        names = ("submit", "submit_lean", "start", "claim", "extend", "complete", "reap",
                 "promote", "release", "cancel", "redrive", "train_create", "train_update",
                 "train_cancel")
        return cls(**{name: client.register_script(_source(name)) for name in names})
