"""Garbage collection of artifacts against a real redis-server and both stores (a local
directory, and moto's S3 server): a deleted version's artifact goes once nothing references
it, a shared sha256 stays while another version (of another tenant) references it, a crash
between the record's deletion and the artifact's leaves an artifact the sweep removes, an
artifact a registration in flight stored again is spared, and a registration that reuses an
artifact the collector is deleting ends with its artifact in the store."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from safetensors.torch import save

from gateway.uploads import WeightsPlan, add_weights_version
from maas.v1.model_service_pb2 import ModelVersion
from runtime.architectures import get_architecture
from runtime.artifact_s3 import S3ArtifactStore, s3_client
from runtime.artifacts import ArtifactStore
from scheduler import keys
from scheduler.artifact_gc import ArtifactCollector, PendingReferences
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry
from tests.s3_server import S3Server, serving_bucket

pytestmark = pytest.mark.timeout(60)

BUCKET = "maas-gc"
GRACE_S = 60.0
LATER_S = 3600.0  # "now" for the collector: every artifact is past its grace period


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from serving_bucket(tmp_path_factory, BUCKET)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(tmp_path / "artifacts")
    server: S3Server = request.getfixturevalue("s3")
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    return S3ArtifactStore(f"s3://{BUCKET}/{tmp_path.name}", tmp_path / "node", 0, s3_client())


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.from_url(redis_url)
    yield redis
    await redis.aclose()


def _present(store: ArtifactStore) -> set[str]:
    return {a.sha256 for a in store.list_artifacts()}


async def _register(registry: ModelRegistry, model: str, sha256: str,
                    is_archive: bool = False) -> ModelVersion:
    version = (ModelVersion(model=model, archive_sha256=sha256) if is_archive
               else ModelVersion(model=model, weights_sha256=sha256))
    return await registry.add_version(version)


async def test_deleted_version_frees_its_artifact_unless_shared(
        client: aioredis.Redis, store: ArtifactStore) -> None:
    registry, gc = ModelRegistry(client), ArtifactCollector(client, store, GRACE_S)
    own, _ = store.put_weights(b"own weights")
    shared, _ = store.put_weights(b"shared weights")
    archive = store.put_archive(b"an archive")
    await _register(registry, "acme/m", own)
    await _register(registry, "acme/m", shared)
    await _register(registry, "acme/m", archive, is_archive=True)
    await _register(registry, "other/m", shared)  # another tenant, the same bytes
    await _register(registry, "other/m", own)

    deleted = await registry.delete_version("acme/m", "2")
    assert deleted.weights_sha256 == shared
    assert await gc.free(deleted, now_s=time.time() + LATER_S) == 0  # other/m:1 has it
    assert shared in _present(store)

    deleted = await registry.delete_version("acme/m", "3")
    assert await gc.free(deleted, now_s=time.time() + LATER_S) == 1
    assert archive not in _present(store)

    await registry.delete_version("other/m", "1")  # a "crash": free never runs
    assert shared in _present(store)
    assert await gc.sweep(now_s=time.time() + LATER_S) == 1
    assert _present(store) == {own}  # still referenced by acme/m:1 and other/m:2


async def test_artifact_within_its_grace_period_is_spared(
        client: aioredis.Redis, store: ArtifactStore) -> None:
    """A registration in flight: stored, its version not yet written; and one that stores
    bytes the store already holds (unreferenced, old) touches them again."""
    gc = ArtifactCollector(client, store, GRACE_S)
    fresh, _ = store.put_weights(b"uploaded, version not yet written")
    assert await gc.sweep() == 0
    assert fresh in _present(store)

    old = store.put_archive(b"an old leftover")
    stored_at = time.time()
    store.put_archive(b"an old leftover")  # stored again by a new registration: touched
    touched = {a.sha256: a.touched_s for a in store.list_artifacts()}[old]
    assert touched >= stored_at - 1  # S3 LastModified has one-second resolution
    assert await gc.sweep(now_s=touched + GRACE_S / 2) == 0
    assert old in _present(store)
    assert await gc.sweep(now_s=time.time() + LATER_S) == 2
    assert _present(store) == set()


class PausingStore(ArtifactStore):
    """A local store whose delete first calls `before_delete` (in the collector's thread):
    the moment after the collector's last check, before its unlink."""

    before_delete: Callable[[], None] = staticmethod(lambda: None)

    def delete(self, kind: str, sha256: str, touched_before_s: float) -> bool:
        self.before_delete()
        return super().delete(kind, sha256, touched_before_s)


def _old_weights(store: ArtifactStore) -> tuple[WeightsPlan, bytes, str]:
    """Weights of an mlp stored long ago and referenced by no version: collectable."""
    arch = get_architecture("mlp")
    config = arch.resolve_config({"hidden": [8]})
    data = save(arch.build(config).state_dict())
    sha256, path = store.put_weights(data)
    os.utime(path, (time.time() - LATER_S, time.time() - LATER_S))
    return WeightsPlan("acme/m", arch, config), data, sha256


async def test_a_registration_reusing_an_artifact_being_collected_keeps_it(
        client: aioredis.Redis, redis_url: str, tmp_path: Path) -> None:
    """The collector decided to delete an old, unreferenced artifact; before its unlink, a
    registration of the same bytes runs as far as it can (it would find them there, touch
    them and write its version). Its version must end with its artifact in the store: it
    waits for the collector, then writes its own copy. ("Now" is past the touch's grace
    too: the touch lands between the store's last check and its unlink.)"""
    store = PausingStore(tmp_path / "artifacts")
    plan, data, sha256 = _old_weights(store)
    registry, queue = ModelRegistry(client), JobQueue(client)
    loop, observer = asyncio.get_running_loop(), redis.Redis.from_url(redis_url)
    registering: list[concurrent.futures.Future[ModelVersion]] = []

    def before_delete() -> None:
        registering.append(asyncio.run_coroutine_threadsafe(
            add_weights_version(registry, queue, store, plan, data), loop))
        # until its version is written, or it holds the artifact (and waits for us)
        while not (registering[0].done()
                   or observer.exists(keys.artifact_pending("weights", sha256))):
            time.sleep(0.01)

    store.before_delete = before_delete
    assert await ArtifactCollector(client, store, GRACE_S).sweep(
        now_s=time.time() + LATER_S) == 1
    version = await asyncio.wrap_future(registering[0])
    observer.close()
    assert version.weights_sha256 == sha256
    assert store.read_weights(sha256) == data, "a version without its artifact"
    assert not await client.exists(keys.artifact_pending("weights", sha256),
                                   keys.artifact_collecting("weights", sha256))


async def test_an_artifact_held_by_a_registration_is_spared(
        client: aioredis.Redis, tmp_path: Path) -> None:
    """A registration that holds an artifact before the collector marks it: spared, and
    collected once released (no version came)."""
    store = ArtifactStore(tmp_path / "artifacts")
    _, _, sha256 = _old_weights(store)
    gc = ArtifactCollector(client, store, GRACE_S)
    async with PendingReferences(client).held("weights", sha256):
        assert await gc.sweep(now_s=time.time() + LATER_S) == 0
        assert sha256 in _present(store)
    assert await gc.sweep(now_s=time.time() + LATER_S) == 1
    assert _present(store) == set()
