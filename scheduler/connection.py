"""The one Redis client of a process, and the errors that mean "Redis is away for now"."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Exceptions a caller should answer with UNAVAILABLE (retry later), never INTERNAL.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError,
                                                 ConnectionError, OSError)


def connect(url: str, *, max_connections: int = 64) -> aioredis.Redis:
    """A client with bounded timeouts and retries; binary replies (payloads are protobuf)."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        max_connections=max_connections,
    )
