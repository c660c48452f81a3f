"""API keys and tenant rate limits in Redis.

`KeyStore` keeps, per key id, the sha256 of the key and its ApiKey record (tenant, scopes);
the key itself is never stored. Revoking deletes the record, so a gateway refuses the key at
its next look-up. `bootstrap_admin` installs the first admin key once per cluster (Redis
records it), so a revoked bootstrap key stays revoked. `RateLimiter` is one token bucket per
tenant, taken from in one script call.
"""

from __future__ import annotations

import enum
import hmac
import logging
import time
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from maas.api_keys import key_id_of, key_sha256, new_api_key
from maas.errors import ApiKeyNotFound
from maas.v1.key_service_pb2 import ApiKey
from scheduler import keys
from scheduler.connection import is_cluster
from scheduler.scripts import register

log = logging.getLogger(__name__)


class Bootstrap(enum.Enum):
    """What became of the admin key of MAAS_ADMIN_KEY_FILE at a gateway's start."""

    INSTALLED = "installed"  # the cluster's first admin key: installed now
    ACTIVE = "active"  # a bootstrap happened before; this key is valid (e.g. rotated into)
    REFUSED = "refused"  # a bootstrap happened before; this key is revoked or unknown


class KeyStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._bootstrap = register(client, "admin_bootstrap")

    async def adopt_untagged(self) -> int:
        """Moves the keys this store wrote before its hash tag (keys.AUTH_TAG) to their
        tagged names, so keys made by an older gateway keep working; the number moved. Run at
        every gateway start: keys an older gateway made during a rolling upgrade are adopted
        by the next start. Key hashes and the bootstrap marker are renamed unless the tagged
        name exists (RENAMENX); the set of ids is merged. On a Redis Cluster there are none
        to move (the untagged names never worked there), and nothing cross-slot is sent."""
        if is_cluster(self._redis):
            return 0
        untagged_ids = f"{keys.PREFIX}:apikeys"
        ids = [k.decode() for k in cast("set[bytes]", await self._redis.smembers(untagged_ids))]
        moved = 0
        for old, new in keys.untagged_auth_keys(ids).items():
            if old == untagged_ids:
                continue
            try:
                moved += bool(await self._redis.renamenx(old, new))
            except ResponseError:  # no such key: adopted meanwhile, or never there
                continue
        if ids:  # one Redis (not a cluster): the two sets may share a MULTI
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.sunionstore(keys.api_keys(), [keys.api_keys(), untagged_ids])
                pipe.delete(untagged_ids)
                await pipe.execute()
            moved += 1
        if moved:
            log.info("moved %d API-key store keys to their {auth}-tagged names", moved)
        return moved

    async def create(self, tenant: str, scopes: tuple[str, ...],
                     description: str = "") -> tuple[str, ApiKey]:
        """A new key (returned once, never stored) and its record."""
        api_key = new_api_key()
        return api_key, await self.install(api_key, tenant, scopes, description)

    async def install(self, api_key: str, tenant: str, scopes: tuple[str, ...],
                      description: str = "") -> ApiKey:
        """Stores a key made elsewhere (e.g. MAAS_ADMIN_KEY_FILE); keeps one already there."""
        key_id = key_id_of(api_key)
        if key_id is None:
            raise ValueError("not a maas API key (maas_<16 hex>_<64 hex>)")
        existing = await self.lookup(api_key)
        if existing is not None:
            return existing
        record = ApiKey(key_id=key_id, tenant=tenant, scopes=scopes, description=description)
        record.create_time.FromNanoseconds(time.time_ns())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.api_key(key_id), mapping={
                "sha256": key_sha256(api_key), "record": record.SerializeToString()})
            pipe.sadd(keys.api_keys(), key_id)
            await pipe.execute()
        return record

    async def bootstrap_admin(self, api_key: str, tenant: str, scopes: tuple[str, ...],
                              description: str = "") -> Bootstrap:
        """Installs the cluster's first admin key, once: only while no bootstrap happened and
        no key holds the admin scope. Later starts never install it again, so revoking it
        (`maas keys rotate-admin`) lasts across restarts."""
        key_id = key_id_of(api_key)
        if key_id is None:
            raise ValueError("not a maas API key (maas_<16 hex>_<64 hex>)")
        if not await self._redis.exists(keys.admin_bootstrap()) and (
                await self._install_first_admin(api_key, key_id, ApiKey(
                    key_id=key_id, tenant=tenant, scopes=scopes, description=description))):
            return Bootstrap.INSTALLED
        return Bootstrap.ACTIVE if await self.lookup(api_key) else Bootstrap.REFUSED

    async def _install_first_admin(self, api_key: str, key_id: str, record: ApiKey) -> bool:
        """ADMIN_BOOTSTRAP of the key, unless an admin key exists already (made before
        bootstraps were recorded: that one becomes the bootstrap)."""
        admins = [k.key_id for k in await self.list() if "admin" in k.scopes]
        if admins:
            await self._redis.set(keys.admin_bootstrap(), admins[0], nx=True)
            return False
        record.create_time.FromNanoseconds(time.time_ns())
        installed = await self._bootstrap(
            keys=[keys.admin_bootstrap(), keys.api_key(key_id), keys.api_keys()],
            args=[key_id, key_sha256(api_key), record.SerializeToString()])
        return bool(int(installed))

    async def lookup(self, api_key: str) -> ApiKey | None:
        """The record of a valid, unrevoked key; None otherwise."""
        key_id = key_id_of(api_key)
        if key_id is None:
            return None
        stored, raw = cast("list[bytes | None]",
                           await self._redis.hmget(keys.api_key(key_id), "sha256", "record"))
        if raw is None or stored is None:
            return None
        if not hmac.compare_digest(stored, key_sha256(api_key).encode()):
            return None
        return ApiKey.FromString(raw)

    async def list(self, tenant: str = "") -> list[ApiKey]:
        """Every key's record (of one tenant when given), by tenant then id."""
        ids = sorted(k.decode()
                     for k in cast("set[bytes]", await self._redis.smembers(keys.api_keys())))
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id in ids:
                pipe.hget(keys.api_key(key_id), "record")
            raws = await pipe.execute()
        found = [ApiKey.FromString(raw) for raw in raws if raw is not None]
        return sorted((k for k in found if not tenant or k.tenant == tenant),
                      key=lambda k: (k.tenant, k.key_id))

    async def revoke(self, key_id: str) -> ApiKey:
        """Deletes the key; NOT_FOUND when there is none of that id."""
        raw = cast("bytes | None", await self._redis.hget(keys.api_key(key_id), "record"))
        if raw is None:
            raise ApiKeyNotFound(f"no API key with id {key_id[:64]!r}")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.api_key(key_id))
            pipe.srem(keys.api_keys(), key_id)
            await pipe.execute()
        return ApiKey.FromString(raw)


class RateLimiter:
    """Per-tenant token buckets: `rate_per_s` tokens a second, at most one second's worth
    (and at least one token) banked."""

    def __init__(self, client: aioredis.Redis, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
        self._burst = max(1.0, rate_per_s)
        self._script = register(client, "rate_limit")

    async def take(self, tenant: str) -> float:
        """0.0 when the call may go ahead; else the seconds until the tenant's next token."""
        taken, wait_ms = await self._script(keys=[keys.rate_bucket(tenant)],
                                            args=[repr(self.rate_per_s), repr(self._burst)])
        return 0.0 if int(taken) else max(int(wait_ms), 1) / 1000
