"""Garbage collection of artifacts against a real redis-server and both stores (a local
directory, and moto's S3 server): a deleted version's artifact goes once nothing references
it, a shared sha256 stays while another version (of another tenant) references it, a crash
between the record's deletion and the artifact's leaves an artifact the sweep removes, and an
artifact a registration in flight stored again is spared."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from maas.v1.model_service_pb2 import ModelVersion
from runtime.artifact_s3 import S3ArtifactStore, s3_client
from runtime.artifacts import ArtifactStore
from scheduler.artifact_gc import ArtifactCollector
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
