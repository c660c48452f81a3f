"""The datasets plane without gRPC, against a real redis-server and a local artifact store:
a streamed upload checked against its header, per-tenant names, pages, delete."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from gateway.plane.datasets import BUILTIN, Datasets
from maas.errors import DatasetNotFound, InvalidArgument, MessageTooLarge
from maas.v1 import dataset_service_pb2 as pb
from runtime.artifacts import ArtifactStore
from scheduler.datasets import DatasetStore


@pytest.fixture
def plane(client: aioredis.Redis, tmp_path: Path) -> Datasets:
    return Datasets(DatasetStore(client), ArtifactStore(tmp_path / "artifacts"))


def npz(n: int = 8) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, features=rng.random((n, 4), dtype=np.float32),
             labels=np.arange(n, dtype=np.int64) % 3)
    return buffer.getvalue()


async def parts(name: str, data: bytes, *, size: int | None = None,
                sha256: str | None = None) -> AsyncIterator[pb.UploadDatasetRequest]:
    yield pb.UploadDatasetRequest(header=pb.UploadDatasetHeader(
        name=name, format="npz", size_bytes=len(data) if size is None else size,
        sha256=sha256 or hashlib.sha256(data).hexdigest()))
    for chunk in chunks(data):
        yield pb.UploadDatasetRequest(chunk=chunk)


def chunks(data: bytes, size: int = 100) -> Iterator[bytes]:
    return (data[i:i + size] for i in range(0, len(data), size))


async def test_an_upload_is_stored_and_seen_by_its_tenant_only(plane: Datasets,
                                                                tmp_path: Path) -> None:
    data = npz()
    record = await plane.upload(parts("mine", data), tenant="acme")
    assert (record.num_samples, list(record.feature_shape), record.num_classes) == (8, [4], 3)
    stored = ArtifactStore(tmp_path / "artifacts").dataset_path(record.sha256, "npz")
    assert stored.read_bytes() == data
    assert (await plane.get("mine", "acme")).sha256 == record.sha256
    with pytest.raises(DatasetNotFound):
        await plane.get("mine", "other")
    assert not list((tmp_path / "artifacts" / "uploads").iterdir())  # no spool left


async def test_bad_uploads_name_the_field_and_store_nothing(plane: Datasets,
                                                            tmp_path: Path) -> None:
    data = npz()
    with pytest.raises(InvalidArgument, match=r"header\.sha256"):
        await plane.upload(parts("bad", data, sha256="0" * 64), tenant="acme")
    with pytest.raises(MessageTooLarge, match="declared size_bytes"):
        await plane.upload(parts("big", data, size=len(data) - 1), tenant="acme")
    with pytest.raises(InvalidArgument, match="built-in"):
        await plane.upload(parts("digits", data), tenant="acme")
    with pytest.raises(DatasetNotFound):
        await plane.get("bad", "acme")
    assert not list((tmp_path / "artifacts" / "uploads").iterdir())


async def test_pages_and_delete(plane: Datasets) -> None:
    for name in ("a1", "b2"):
        await plane.upload(parts(name, npz()), tenant="acme")
    names, token = [], ""
    while True:
        page, token = await plane.list_page(2, token, "acme")
        names += [d.name for d in page]
        if not token:
            break
    assert names == sorted({*BUILTIN, "a1", "b2"})
    await plane.delete("a1", "acme")
    with pytest.raises(DatasetNotFound):
        await plane.get("a1", "acme")
    with pytest.raises(InvalidArgument, match="built in"):
        await plane.delete("digits", "acme")
