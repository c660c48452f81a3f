"""Datasets: a tenant's uploaded datasets and the built-in ones, without gRPC (the plane the
DatasetService servicer translates to): a streamed upload checked against its header and
sha256 and stored in the artifact store, get, list by pages, delete."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterable
from pathlib import Path

from gateway.bounds import check_page_token, page_size
from maas.errors import FieldViolation, InvalidArgument, MessageTooLarge, shown
from maas.v1 import dataset_service_pb2 as pb
from runtime import datasets
from runtime.artifacts import ArtifactStore
from scheduler.datasets import DatasetStore
from scheduler.registry import check_model_name

DEFAULT_PAGE_SIZE = 100
# ListDatasets' next_page_token: the last dataset name of the page.
PAGE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
FORMATS = {"npz": datasets.load_npz_bytes, "safetensors": datasets.load_safetensors_bytes}
# Facts of the built-in datasets (a unit test checks them against runtime.datasets).
BUILTIN = {"digits": pb.Dataset(
    name="digits", num_samples=1797, feature_shape=[8, 8], num_classes=10, format="builtin",
    sha256="dc37fc07a078a1d97ef646b022dd5e20f085be4863f393fe064a58121e9349b1"),
    "parity": pb.Dataset(
        name="parity", num_samples=2000, feature_shape=[20], num_classes=2, format="builtin",
        sha256="7ba7adfbc8ffb02eb1b99273bdcd70bd99a57a51373e260ff02b2f95d766d41e"),
    "majority": pb.Dataset(
        name="majority", num_samples=2000, feature_shape=[32], num_classes=4, format="builtin",
        sha256="0b872f0549829cb370bea95cf3443cedf4940921c80b499083f973f31631ccc5"),
    # labels: prompt lengths (a gpt's targets are the tokens after them); num_classes = max + 1
    "addition": pb.Dataset(
        name="addition", num_samples=10000, feature_shape=[11], num_classes=8, format="builtin",
        sha256="78e6386dca02d7b3b531e3aae88fdb26dbcd8406e1304d8fe8bfc0da4851e2f4")}


def _bad(field: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {why}", violations=(FieldViolation(field, why),))


def _check_header(header: pb.UploadDatasetHeader, max_bytes: int) -> None:
    try:
        check_model_name(header.name)
    except InvalidArgument:
        raise _bad("header.name", f"{shown(header.name)} is not a valid dataset name (1-64 "
                   "letters, digits, '-', '_', '.')") from None
    if header.name in BUILTIN:
        raise _bad("header.name", f"{header.name!r} is a built-in dataset")
    if header.format not in FORMATS:
        raise _bad("header.format", f"{shown(header.format)}; use one of {sorted(FORMATS)}")
    if not 0 < header.size_bytes <= max_bytes:
        raise _bad("header.size_bytes", f"must be 1..{max_bytes} bytes "
                   f"(MAAS_MAX_DATASET_BYTES), got {header.size_bytes}")
    if len(header.sha256) != 64:
        raise _bad("header.sha256", "must be the hex sha256 of the whole file")


class Datasets:
    """Each tenant sees the built-in datasets and its own uploads (names are per tenant)."""

    def __init__(self, store: DatasetStore, artifacts: ArtifactStore,
                 max_bytes: int = datasets.MAX_DATASET_BYTES) -> None:
        self._store = store
        self._artifacts = artifacts
        self._max_bytes = max_bytes

    async def upload(self, parts: AsyncIterable[pb.UploadDatasetRequest],
                     tenant: str) -> pb.Dataset:
        """A header, then chunks: spooled to disk, checked, stored, recorded."""
        header: pb.UploadDatasetHeader | None = None
        digest = hashlib.sha256()
        spool_dir = self._artifacts.root / "uploads"
        spool_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=spool_dir, prefix=".upload-")
        received = 0
        try:
            with os.fdopen(fd, "wb") as spool:
                async for part in parts:
                    if header is None:
                        if not part.HasField("header"):
                            raise _bad("header", "the first message must be the header")
                        header = part.header
                        _check_header(header, self._max_bytes)
                        continue
                    received += len(part.chunk)
                    if received > header.size_bytes:
                        raise MessageTooLarge(f"upload exceeds its declared size_bytes "
                                              f"{header.size_bytes}")
                    digest.update(part.chunk)
                    spool.write(part.chunk)
                spool.flush()
                os.fsync(spool.fileno())
            if header is None:
                raise _bad("header", "empty upload: send a header, then chunks")
            return await self._register(header, Path(tmp), received, digest.hexdigest(), tenant)
        finally:
            # Not in a thread: a cancelled call must still remove its spool file.
            Path(tmp).unlink(missing_ok=True)  # noqa: ASYNC240

    def _store_file(self, header: pb.UploadDatasetHeader, tmp: Path,
                    sha256: str) -> datasets.Dataset:
        """Validates the spooled file and moves it into the artifact store (blocking)."""
        loaded = FORMATS[header.format](tmp.read_bytes(), header.name, self._max_bytes)
        self._artifacts.put_dataset(tmp, sha256, header.format)
        return loaded

    async def _register(self, header: pb.UploadDatasetHeader, tmp: Path, received: int,
                        sha256: str, tenant: str) -> pb.Dataset:
        if received != header.size_bytes:
            raise _bad("chunk", f"got {received} bytes of the declared {header.size_bytes}")
        if sha256 != header.sha256.lower():
            raise _bad("header.sha256", f"the upload's sha256 is {sha256}, not {header.sha256}")
        loaded = await asyncio.to_thread(self._store_file, header, tmp, sha256)
        record = pb.Dataset(name=header.name, sha256=sha256, num_samples=loaded.num_samples,
                            feature_shape=loaded.sample_shape,
                            num_classes=int(loaded.labels.max()) + 1, size_bytes=received,
                            format=header.format)
        record.create_time.GetCurrentTime()
        await self._store.put(record, tenant)
        return record

    async def get(self, name: str, tenant: str) -> pb.Dataset:
        check_model_name(name)
        return BUILTIN.get(name) or await self._store.get(name, tenant)

    async def list_page(self, size: int, token: str, tenant: str) -> tuple[list[pb.Dataset], str]:
        """A page of the built-in and the tenant's datasets by name, and the next token."""
        count = page_size(size, DEFAULT_PAGE_SIZE)
        check_page_token(token, PAGE_TOKEN)
        names = sorted({*BUILTIN, *await self._store.names(tenant)})
        page = [n for n in names if n > token][:count]
        found = [BUILTIN.get(n) or await self._store.get(n, tenant) for n in page]
        more = bool(page) and page[-1] != names[-1]
        return found, page[-1] if more else ""

    async def delete(self, name: str, tenant: str) -> None:
        if name in BUILTIN:
            raise _bad("name", f"{name!r} is built in and cannot be deleted")
        check_model_name(name)
        await self._store.get(name, tenant)  # NOT_FOUND first
        await self._store.delete(name, tenant)
