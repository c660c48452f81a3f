"""scheduler.registry: names and versions that cannot exist are refused before any Redis call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis

from maas.errors import InvalidArgument, ModelVersionNotFound
from scheduler.registry import ModelRegistry, check_model_name


@pytest.fixture
async def registry() -> AsyncIterator[ModelRegistry]:
    """A registry whose Redis does not exist: any round trip would fail with ConnectionError."""
    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.1)
    yield ModelRegistry(client)
    await client.aclose()


@pytest.mark.parametrize("name", ["x" * 65, "x" * 10_000, "bad name!", "-lead", "", "mlp\n",
                                  "ünï", "a/b/c", "/b", "a b/c"])
async def test_a_name_no_model_can_have(registry: ModelRegistry, name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await registry.resolve(name)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["model_name"]
    assert len(caught.value.message) < 300


@pytest.mark.parametrize("version", ["0", "-1", "01", "1.0", "latest", " 1", "x" * 10_000,
                                     "9" * 40, "\u0661"])
async def test_a_version_no_model_can_have(registry: ModelRegistry, version: str) -> None:
    with pytest.raises(ModelVersionNotFound) as caught:
        await registry.resolve("mlp", version)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert "versions are 1, 2, 3" in caught.value.message
    assert len(caught.value.message) < 300


def test_check_model_name() -> None:
    for good in ("mlp", "a", "x" * 64, "My_model-2.1", "0abc"):
        check_model_name(good)
    with pytest.raises(InvalidArgument) as caught:
        check_model_name("bad name!")
    assert [v.field for v in caught.value.violations] == ["name"]
    assert "'bad name!'" in caught.value.message
