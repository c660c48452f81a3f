"""The dataset registry in Redis: name → Dataset protobuf; the file lives in the artifact store.

Built-in datasets are not stored: they are listed from `maas.datasets` and always present.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from maas.errors import NotFound
from maas.v1.dataset_service_pb2 import Dataset
from scheduler import keys


class DatasetNotFound(NotFound):
    reason = "DATASET_NOT_FOUND"


class DatasetStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def put(self, dataset: Dataset) -> None:
        await self._redis.hset(keys.datasets(), dataset.name, dataset.SerializeToString())

    async def get(self, name: str) -> Dataset:
        raw = await self._redis.hget(keys.datasets(), name)
        if raw is None:
            raise DatasetNotFound(f"no dataset {name!r}; upload one or use a built-in (digits)")
        return Dataset.FromString(raw)

    async def names(self) -> list[str]:
        return sorted(n.decode() for n in await self._redis.hkeys(keys.datasets()))

    async def delete(self, name: str) -> bool:
        return bool(await self._redis.hdel(keys.datasets(), name))
