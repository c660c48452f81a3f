"""ModelLifecycle (gateway/plane/models.py) on a real redis-server, without a gRPC server:
register, list, get, download, aliases, deletion, unloading (as the anonymous caller)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
from safetensors.numpy import load, save

from gateway.plane.models import ModelLifecycle
from maas.errors import (
    InvalidArgument,
    MessageTooLarge,
    ModelNotFound,
    ModelVersionInUse,
)
from maas.v1 import model_service_pb2 as pb
from runtime.artifacts import ArtifactStore
from runtime.weights import sha256_hex
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry
from tests.inprocess import mlp_weights

pytestmark = pytest.mark.timeout(30)


def lifecycle(client: aioredis.Redis, root: Path, **limits: int) -> ModelLifecycle:
    return ModelLifecycle(ModelRegistry(client), JobQueue(client), ArtifactStore(root),
                          verify_wait_s=0.5, **limits)


@pytest.fixture
def models(client: aioredis.Redis, tmp_path: Path) -> ModelLifecycle:
    return lifecycle(client, tmp_path / "artifacts")


def weights(name: str = "m", **fields: str) -> pb.RegisterModelRequest:
    return pb.RegisterModelRequest(name=name, architecture="mlp", weights=mlp_weights(),
                                   **fields)


async def test_registered_weights_are_the_next_version(models: ModelLifecycle) -> None:
    first = await models.register(weights(weights_sha256=sha256_hex(mlp_weights())))
    second = await models.register(weights())
    assert (first.model, first.version, second.version) == ("m", "1", "2")
    assert first.weights_sha256 == sha256_hex(mlp_weights()) and first.architecture == "mlp"
    model = await models.get("m")
    assert [v.version for v in model.versions] == ["1", "2"] and model.latest_version == "2"
    assert model.shared  # tenant "": the shared catalog


async def test_a_bad_registration_is_refused(models: ModelLifecycle, client: aioredis.Redis,
                                             tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not match the uploaded weights"):
        await models.register(weights(weights_sha256="0" * 64))
    small = lifecycle(client, tmp_path / "a", max_message_bytes=1000)
    with pytest.raises(MessageTooLarge, match="MAAS_MAX_MESSAGE_BYTES=1000"):
        await small.register(weights())
    with pytest.raises(ModelNotFound):
        await models.get("m")


async def test_models_are_listed_a_page_at_a_time(models: ModelLifecycle) -> None:
    for name in ("c", "a", "b"):
        await models.register(weights(name))
    page, token = await models.list_models(2, "")
    rest, last = await models.list_models(2, token)
    assert [m.name for m in page] == ["a", "b"] and token == "b"
    assert [m.name for m in rest] == ["c"] and last == ""


async def test_a_download_is_the_version_then_its_bytes(models: ModelLifecycle) -> None:
    await models.register(weights())
    parts = [p async for p in models.download("m", "")]
    assert isinstance(parts[0], pb.ModelVersion) and parts[0].version == "1"
    assert b"".join(p for p in parts[1:] if isinstance(p, bytes)) == mlp_weights()
    with pytest.raises(ModelNotFound):
        [p async for p in models.download("nope", "")]


async def test_aliases_and_versions_change(models: ModelLifecycle) -> None:
    for _ in range(2):
        await models.register(weights())
    model, previous = await models.set_alias("m", "prod", "1")
    assert dict(model.aliases) == {"prod": "1"} and previous == ""
    model, previous = await models.set_alias("m", "prod", "2")
    assert previous == "1"
    with pytest.raises(ModelVersionInUse):
        await models.delete_version("m", "2")  # the alias names it
    assert [v.version for v in (await models.delete_version("m", "1")).versions] == ["2"]
    assert not (await models.delete_alias("m", "prod")).aliases
    with pytest.raises(ModelNotFound):
        await models.set_alias("nope", "prod", "1")


async def test_unloading_marks_the_model(models: ModelLifecycle) -> None:
    await models.register(weights())
    await models.set_unloaded("m", True, "unloading a model")
    assert (await models.get("m")).unloaded
    await models.set_unloaded("m", False, "loading a model")
    assert not (await models.get("m")).unloaded


async def test_deleting_a_version_frees_its_artifact_once_unreferenced(
        models: ModelLifecycle, tmp_path: Path) -> None:
    ones = {k: np.ones(v.shape, np.float32) for k, v in load(mlp_weights()).items()}
    other = save(ones)
    await models.register(weights())  # 1: zeros
    ones_version = weights()
    ones_version.weights = other
    await models.register(ones_version)  # 2: ones
    await models.register(weights())  # 3: zeros again (one file for 1 and 3)
    store = ArtifactStore(tmp_path / "artifacts")
    zeros_file, ones_file = (store.weights_path(sha256_hex(w)) for w in (mlp_weights(), other))
    long_ago = time.time() - 7200  # past the collector's grace for registrations in flight
    for path in (zeros_file, ones_file):
        os.utime(path, (long_ago, long_ago))
    await models.delete_version("m", "2")
    assert not ones_file.exists()
    await models.delete_version("m", "1")
    assert zeros_file.exists()  # version 3 still references it
