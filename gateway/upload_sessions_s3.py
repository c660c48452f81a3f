"""Resumable model uploads kept in object storage (MAAS_ARTIFACT_URL=s3://...): a stream broken
on one gateway is resumed through any other, with no shared directory.

The same contract as the directory's uploads (gateway/upload_sessions.py): CreateModelUpload
opens an S3 multipart upload and its record (runtime/s3_uploads.py); UploadModel with the
upload id and the offset GetModelUpload (or a FAILED_PRECONDITION) reports appends parts of
one fixed size (PART_BYTES, the gateway holding one part at a time), so the offset is the
bytes in the parts S3 lists and a broken stream's unsent tail is simply sent again. When the
last byte arrived the parts are assembled into `uploads/<id>` and checked by sha256: the
stream's running hash when it saw every byte, else by reading the object back into this
node's scratch (streamed). A checked object is copied to its content-addressed key in the
bucket and the version registered; a wrong file is discarded. One stream writes an upload at
a time: a lease in Redis (scheduler/upload_leases.py), UNAVAILABLE with a retry delay to the
others. An upload with no new part for MAAS_UPLOAD_TTL_S is aborted by the sweep; a bucket
lifecycle rule (AbortIncompleteMultipartUpload) is the backstop (deploy/k8s/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.upload_sessions import (
    BUSY_RETRY_S,
    UploadSessions,
    busy,
    check_bound,
    check_upload_id,
    not_known,
    storage_error,
)
from gateway.uploads import check_complete, check_sha256, write_chunks
from maas.errors import InvalidArgument, MaasError, Unavailable
from maas.v1 import model_service_pb2 as pb
from runtime.artifact_cache import sha256_file
from runtime.artifact_s3 import S3ArtifactStore
from runtime.artifacts import ArtifactStore
from runtime.s3_uploads import S3Uploads, UploadState, part_size
from scheduler.artifact_gc import PendingReferences
from scheduler.upload_leases import UploadLeases

log = logging.getLogger(__name__)

PART_BYTES = 8 << 20  # 8,192 parts hold 64 GiB; part_size grows it for larger files
# The retry delay while another stream holds the upload grows with its lease's time left, up
# to this: the SDK's 6 attempts then outlast the 30 s lease of a gateway that died mid-stream.
BUSY_MAX_DELAY_S = 5.0


@dataclass(frozen=True)
class LiveUpload:
    upload_id: str
    start: pb.UploadModelStart  # as created: without upload_id and offset
    s3_id: str
    part_bytes: int
    state: UploadState

    def view(self, ttl_s: float) -> pb.ModelUpload:
        expire = Timestamp()
        expire.FromNanoseconds(int((self.state.active_s + ttl_s) * 1e9))
        return pb.ModelUpload(upload_id=self.upload_id, received_bytes=self.state.received_bytes,
                              size_bytes=self.start.size_bytes, sha256=self.start.sha256,
                              expire_time=expire)


class PartWriter:
    """What `write_chunks` appends to: one part buffered, each full part sent, the short last
    one once the file is whole (a stream that ends early leaves its tail to be sent again);
    a copy of every byte in `spool` when the stream began at offset 0."""

    def __init__(self, s3: S3Uploads, live: LiveUpload, offset: int,
                 spool: BinaryIO | None) -> None:
        self._s3, self._live, self._spool = s3, live, spool
        self._offset = offset
        self._next_part = offset // live.part_bytes + 1
        self._buffer = bytearray()

    def write(self, chunk: bytes) -> None:
        if self._spool is not None:
            self._spool.write(chunk)
        self._buffer += chunk
        self._offset += len(chunk)
        while len(self._buffer) >= self._live.part_bytes:
            with memoryview(self._buffer) as view:
                part = bytes(view[:self._live.part_bytes])
            del self._buffer[:self._live.part_bytes]
            self._send(part)

    def flush(self) -> None:
        if self._offset == self._live.start.size_bytes and self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        if self._spool is not None:
            self._spool.flush()

    def _send(self, part: bytes) -> None:
        self._s3.put_part(self._live.upload_id, self._live.s3_id, self._next_part, part)
        self._next_part += 1


class S3UploadSessions:
    """The resumable uploads of a bucket, shared by every gateway on it. `local` keeps this
    node's one-shot uploads (swept as the directory's are)."""

    def __init__(self, store: ArtifactStore, leases: UploadLeases,
                 references: PendingReferences, ttl_s: float,
                 part_bytes: int = PART_BYTES) -> None:
        if not isinstance(store, S3ArtifactStore):
            raise TypeError("S3UploadSessions needs an S3ArtifactStore")
        self._store = store
        self._s3 = S3Uploads(store)
        self._leases = leases
        self._references = references
        self.ttl_s = ttl_s
        self.part_bytes = part_bytes
        self.local = UploadSessions(store.upload_path("-").parent, ttl_s)

    async def open(self, tenant: str, start: pb.UploadModelStart) -> pb.ModelUpload:
        """CreateModelUpload: a new upload of `start` (checked by the caller)."""
        bound = pb.UploadModelStart()
        bound.CopyFrom(start)
        bound.ClearField("upload_id")
        bound.ClearField("offset")
        upload_id = uuid.uuid4().hex
        size = part_size(bound.size_bytes, self.part_bytes)
        record = await asyncio.to_thread(self._s3.create, upload_id, {
            "tenant": tenant, "start": json_format.MessageToDict(bound), "part_bytes": size})
        state = UploadState(0, time.time(), is_assembled=False)
        return LiveUpload(upload_id, bound, record["s3_upload_id"], size, state
                          ).view(self.ttl_s)

    async def describe(self, tenant: str, upload_id: str) -> pb.ModelUpload:
        """GetModelUpload: where the caller's upload stands."""
        return (await self._live(tenant, upload_id, "upload_id")).view(self.ttl_s)

    async def _live(self, tenant: str, upload_id: str, field: str) -> LiveUpload:
        """The caller's live upload; NOT_FOUND for an unknown, expired or foreign id."""
        check_upload_id(upload_id, field)
        found = await asyncio.to_thread(self._s3.record, upload_id)
        if found is None or found[0].get("tenant") != tenant:
            raise not_known(upload_id, self.ttl_s)
        record, written_s = found
        state = await asyncio.to_thread(self._s3.state, upload_id, record["s3_upload_id"],
                                        written_s)
        if state is None:
            raise not_known(upload_id, self.ttl_s)
        if state.active_s + self.ttl_s < time.time():
            await asyncio.to_thread(self._s3.discard, upload_id, record["s3_upload_id"])
            raise not_known(upload_id, self.ttl_s)
        start = json_format.ParseDict(record["start"], pb.UploadModelStart())
        return LiveUpload(upload_id, start, record["s3_upload_id"], record["part_bytes"],
                          state)

    @contextlib.asynccontextmanager
    async def receive(self, requests: AsyncIterator[pb.UploadModelRequest],
                      start: pb.UploadModelStart, tenant: str) -> AsyncIterator[Path]:
        """The upload's checked file (a local copy) for the block, which registers it. A
        broken stream keeps the parts sent; a file that fails its checks is discarded. The
        artifact is held (garbage collection spares it) from its copy under its sha256 to
        the end of the block."""
        live = await self._live(tenant, start.upload_id, "start.upload_id")
        token = await self._leases.acquire(live.upload_id)
        if token is None:  # its holder may be a gateway that died: wait longer for that
            left_s = await self._leases.remaining_s(live.upload_id)
            raise busy(live.upload_id, min(max(left_s, BUSY_RETRY_S), BUSY_MAX_DELAY_S))
        path = self._store.upload_path(f"{live.upload_id}-{token}")
        try:
            live = await self._live(tenant, start.upload_id, "start.upload_id")  # as held
            check_bound(live.start, live.upload_id, live.state.received_bytes, start)
            digest = await self._assembled(requests, start, live, path, token)
            kind = "archives" if start.is_archive else "weights"
            async with self._discarding(live), self._references.held(kind, start.sha256):
                await self._checked(start, live, path, digest)
                yield path
        except OSError as exc:
            raise storage_error(exc, path.parent) from None
        finally:
            path.unlink(missing_ok=True)
            await self._leases.release(live.upload_id, token)

    @contextlib.asynccontextmanager
    async def _discarding(self, live: LiveUpload) -> AsyncIterator[None]:
        """Discards the upload when the block ends well (registered) or refuses the file
        (INVALID_ARGUMENT); keeps it otherwise (the registration may be tried again)."""
        try:
            yield
        except InvalidArgument:
            await asyncio.to_thread(self._s3.discard, live.upload_id, live.s3_id)
            raise
        await asyncio.to_thread(self._s3.discard, live.upload_id, live.s3_id)

    async def _assembled(self, requests: AsyncIterator[pb.UploadModelRequest],
                         start: pb.UploadModelStart, live: LiveUpload, path: Path,
                         token: str) -> str:
        """Receives the rest of the file as parts and assembles them into one object; the
        sha256 of the whole file when this stream saw every byte (copied into `path`), else
        "". A stream that ends early is INVALID_ARGUMENT and keeps what it sent."""
        whole = start.offset == 0 and not live.state.is_assembled
        digest = hashlib.sha256()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as spool:
            writer = PartWriter(self._s3, live, start.offset, spool if whole else None)
            received = await write_chunks(self._renewing(requests, live.upload_id, token),
                                          start, writer, digest, start.offset)
        check_complete(start, received)
        if not live.state.is_assembled:
            await asyncio.to_thread(self._s3.complete, live.upload_id, live.s3_id)
        return digest.hexdigest() if whole else ""

    async def _checked(self, start: pb.UploadModelStart, live: LiveUpload, path: Path,
                       sha256: str) -> None:
        """Checks the assembled object's sha256 (read back into `path` when no one stream
        saw it all: streamed, never whole in memory) and copies it under its sha256."""
        if not sha256:
            await asyncio.to_thread(self._s3.download, live.upload_id, path)
            sha256 = await asyncio.to_thread(sha256_file, path)
        check_sha256(start, sha256)
        await asyncio.to_thread(self._s3.adopt, live.upload_id, start.sha256,
                                start.is_archive)

    async def _renewing(self, requests: AsyncIterator[pb.UploadModelRequest], upload_id: str,
                        token: str) -> AsyncIterator[pb.UploadModelRequest]:
        """The stream's messages, renewing the lease as they come."""
        renewed = time.monotonic()
        async for message in requests:
            if time.monotonic() - renewed > self._leases.lease_s / 3:
                if not await self._leases.renew(upload_id, token):
                    raise Unavailable(f"upload {upload_id} was taken over by another stream "
                                      "(this one stalled); resume from GetModelUpload's offset",
                                      retry_delay_s=1.0)
                renewed = time.monotonic()
            yield message

    async def sweep(self) -> int:
        """Aborts the uploads with no new part for the TTL (and multipart uploads a gateway
        left without a record); the number aborted."""
        return await asyncio.to_thread(self._sweep_bucket)

    def _sweep_bucket(self) -> int:
        now, deleted, recorded = time.time(), 0, set()
        for upload_id in list(self._s3.upload_ids()):
            found = self._s3.record(upload_id)
            if found is None:
                continue
            recorded.add(upload_id)
            s3_id = found[0]["s3_upload_id"]
            state = self._s3.state(upload_id, s3_id, found[1])
            if state is None or state.active_s + self.ttl_s < now:
                self._s3.discard(upload_id, s3_id)
                deleted += 1
        for upload_id, s3_id, initiated_s in list(self._s3.multipart_uploads()):
            if (upload_id not in recorded and initiated_s + self.ttl_s < now
                    and self._s3.record(upload_id) is None):  # not one opened since
                self._s3.discard(upload_id, s3_id)
                deleted += 1
        if deleted:
            log.info("aborted %d expired upload(s) in %s", deleted, self._store.url)
        return deleted

    async def sweep_forever(self) -> None:
        """Sweeps the bucket and this node's scratch at once, then every sweep period."""
        while True:
            try:
                await self.sweep()
                await asyncio.to_thread(self.local.sweep, False)
            except (MaasError, OSError) as exc:
                log.warning("cannot sweep the uploads in %s: %s", self._store.url, exc)
            await asyncio.sleep(self.local.sweep_period_s)
