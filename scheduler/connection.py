"""The one Redis client of a process, and the errors that mean "Redis is away for now"."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Exceptions a caller should answer with UNAVAILABLE (retry later), never INTERNAL.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError,
                                                 ConnectionError, OSError)


SOCKET_TIMEOUT_S = 10.0  # > every BLOCK of ours (at most 1 s)


def connect(url: str, *, max_connections: int = 256) -> aioredis.Redis:
    """A client with bounded timeouts and retries; binary replies (payloads are protobuf).

    Every command has a deadline (socket_timeout, above the longest BLOCK we use): a reply
    lost with a Redis that died must not leave a caller waiting forever — a worker stuck in
    COMPLETE would keep renewing the leases of jobs it will never finish.
    """
    # A plain pool (a blocking one costs ~0.25 ms per request at c=1, measured with
    # bench.serving); bursts that could exceed it (cancels) are bounded by their callers.
    pool = aioredis.ConnectionPool.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2.0,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        max_connections=max_connections,
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool


class EvictingRedis(RuntimeError):
    """The Redis server may evict keys: accepted jobs could vanish. maas refuses to run."""


async def check_durability(client: aioredis.Redis) -> None:
    """Refuses a Redis whose maxmemory-policy may evict keys (any policy but noeviction).

    Managed Redis that hides CONFIG is trusted, with a warning in the log.
    """
    try:
        policy = (await client.config_get("maxmemory-policy")).get("maxmemory-policy")
    except ResponseError as exc:
        logging.getLogger(__name__).warning("cannot read maxmemory-policy (%s); make sure it "
                                            "is noeviction", exc)
        return
    if policy not in (None, "noeviction", b"noeviction"):
        raise EvictingRedis(
            f"Redis maxmemory-policy is {policy!r}: it may evict queued jobs. Set "
            "`maxmemory-policy noeviction` (redis.conf or CONFIG SET) and start again.")


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis at maxmemory with noeviction refuses writes with an OOM error (nothing evicted)."""
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and str(exc).startswith("OOM"))
