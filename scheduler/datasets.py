"""The dataset registry in Redis: id → Dataset protobuf; the file lives in the artifact store.

A tenant's dataset is stored under its id `<tenant>/<name>` (scheduler/keys.py); the record
keeps the name its owner gave it. Built-in datasets are not stored: they are listed from
`runtime.datasets` and always present.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

from maas.errors import DatasetNotFound
from maas.v1.dataset_service_pb2 import Dataset
from scheduler import keys


class DatasetStore:
    """Every method takes the owner's tenant ("" = shared; the worker passes ids with it)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def put(self, dataset: Dataset, tenant: str = "") -> None:
        await self._redis.hset(keys.datasets(), keys.model_id(tenant, dataset.name),
                               dataset.SerializeToString())

    async def get(self, name: str, tenant: str = "") -> Dataset:
        raw = cast("bytes | None",
                   await self._redis.hget(keys.datasets(), keys.model_id(tenant, name)))
        if raw is None:
            shown = keys.split_model_id(name)[1]
            raise DatasetNotFound(f"no dataset {shown!r}; upload one or use a built-in "
                                  "(digits, parity, majority)")
        return Dataset.FromString(raw)

    async def names(self, tenant: str = "") -> list[str]:
        """The names of one tenant's datasets."""
        names = cast("list[bytes]", await self._redis.hkeys(keys.datasets()))
        ids = (keys.split_model_id(n.decode()) for n in names)
        return sorted(name for owner, name in ids if owner == tenant)

    async def delete(self, name: str, tenant: str = "") -> bool:
        return bool(await self._redis.hdel(keys.datasets(), keys.model_id(tenant, name)))
