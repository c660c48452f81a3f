"""Resumable model uploads: the records that let a broken UploadModel stream continue.

With a local artifact store they are files, below; with object storage they live in the
bucket (gateway/upload_sessions_s3.py, same contract), so any gateway resumes them.

An upload `<id>` is two files under `<artifacts>/uploads/`: `<id>.part`, the bytes received
so far (its size is the offset to resume at), and `<id>.json`, who owns it and the start
(UploadModelStart, as protobuf JSON) it was created with. Both live until the version is
registered, the file fails its checks, or MAAS_UPLOAD_TTL_S passes without a new byte (the
part's mtime); `sweep` deletes expired ones and one-shot parts a crashed gateway left. One
stream writes an upload at a time (an exclusive flock on the part).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from maas.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MaasError,
    NotFound,
    QuotaExceeded,
    QuotaViolation,
    Unavailable,
)
from maas.v1 import model_service_pb2 as pb
from runtime.artifacts import ArtifactStore

if TYPE_CHECKING:
    from gateway.upload_sessions_s3 import S3UploadSessions
    from scheduler.queue import JobQueue

log = logging.getLogger(__name__)

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
BUSY_RETRY_S = 1.0
# Fields of a resumed start that must equal the upload's (the rest: upload_id, offset).
BOUND_FIELDS = ("model", "is_archive", "size_bytes", "sha256")


def storage_error(exc: OSError, directory: Path) -> MaasError:
    """What a failed write of an upload means to the caller: a full disk (or quota) is
    RESOURCE_EXHAUSTED naming the artifact directory; any other I/O error UNAVAILABLE."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return QuotaExceeded(
            f"no space left in the artifact directory {directory} (MAAS_DATA_DIR / "
            f"MAAS_ARTIFACT_URL) while receiving an upload; a resumable upload keeps what "
            f"arrived and continues once there is room",
            quota_violations=(QuotaViolation(str(directory), "no space left on device"),))
    return Unavailable(f"the artifact directory {directory} failed a write "
                       f"({exc.strerror or exc}); try again", retry_delay_s=BUSY_RETRY_S)


def resumable_uploads(store: ArtifactStore, queue: JobQueue, ttl_s: float
                      ) -> UploadSessions | S3UploadSessions:
    """Where resumable uploads live: beside a local store (the directory every gateway
    shares), or in the bucket of an object store, so that any gateway resumes them."""
    if type(store) is ArtifactStore:
        return UploadSessions(store.upload_path("-").parent, ttl_s)
    from gateway.upload_sessions_s3 import S3UploadSessions  # boto3: object storage only
    from scheduler.artifact_gc import PendingReferences
    from scheduler.upload_leases import UploadLeases

    return S3UploadSessions(store, UploadLeases(queue.client), PendingReferences(queue.client),
                            ttl_s)


def check_upload_id(upload_id: str, field: str) -> None:
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise InvalidArgument(f"{field} must be an id from CreateModelUpload (32 hex "
                              "digits)", violations=(FieldViolation(field, "malformed"),))


def not_known(upload_id: str, ttl_s: float) -> NotFound:
    return NotFound(f"upload {upload_id} is not known: never created, already registered, "
                    f"discarded, or expired (MAAS_UPLOAD_TTL_S={ttl_s:g})")


def busy(upload_id: str, retry_delay_s: float = BUSY_RETRY_S) -> Unavailable:
    return Unavailable(f"upload {upload_id} is still receiving on another stream; retry in "
                       "a moment", retry_delay_s=retry_delay_s)


@dataclass(frozen=True)
class UploadRecord:
    upload_id: str
    tenant: str
    start: pb.UploadModelStart
    part: Path

    def received_bytes(self) -> int:
        return self.part.stat().st_size if self.part.exists() else 0

    def view(self, ttl_s: float) -> pb.ModelUpload:
        mtime = self.part.stat().st_mtime if self.part.exists() else time.time()
        expire = Timestamp()
        expire.FromNanoseconds(int((mtime + ttl_s) * 1e9))
        return pb.ModelUpload(upload_id=self.upload_id, received_bytes=self.received_bytes(),
                              size_bytes=self.start.size_bytes, sha256=self.start.sha256,
                              expire_time=expire)


class UploadSessions:
    """The resumable uploads of one artifact directory (shared by every gateway on it)."""

    def __init__(self, directory: Path, ttl_s: float) -> None:
        self.directory = directory
        self.ttl_s = ttl_s
        self._swept_at = 0.0

    def _meta(self, upload_id: str) -> Path:
        return self.directory / f"{upload_id}.json"

    def part(self, upload_id: str) -> Path:
        return self.directory / f"{upload_id}.part"

    def create(self, tenant: str, start: pb.UploadModelStart) -> UploadRecord:
        self.sweep()
        bound = pb.UploadModelStart()
        bound.CopyFrom(start)
        bound.ClearField("upload_id")
        bound.ClearField("offset")
        upload_id = uuid.uuid4().hex
        record = UploadRecord(upload_id, tenant, bound, self.part(upload_id))
        meta = {"tenant": tenant, "start": json_format.MessageToDict(bound)}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            record.part.touch()
            self._meta(record.upload_id).write_text(json.dumps(meta))
        except OSError as exc:
            self.discard(record.upload_id)
            raise storage_error(exc, self.directory) from None
        return record

    async def open(self, tenant: str, start: pb.UploadModelStart) -> pb.ModelUpload:
        """CreateModelUpload: a new upload of `start` (checked by the caller)."""
        return self.create(tenant, start).view(self.ttl_s)

    async def describe(self, tenant: str, upload_id: str) -> pb.ModelUpload:
        """GetModelUpload: where the caller's upload stands."""
        self.sweep()
        return self.get(tenant, upload_id).view(self.ttl_s)

    def get(self, tenant: str, upload_id: str, field: str = "upload_id") -> UploadRecord:
        """The caller's live upload; NOT_FOUND for an unknown, expired or foreign id."""
        check_upload_id(upload_id, field)
        gone = not_known(upload_id, self.ttl_s)
        part = self.part(upload_id)
        try:
            meta = json.loads(self._meta(upload_id).read_text())
            mtime = part.stat().st_mtime
        except (OSError, ValueError):
            raise gone from None
        if meta.get("tenant") != tenant:
            raise gone
        if mtime + self.ttl_s < time.time():
            self.discard(upload_id)
            raise gone
        start = json_format.ParseDict(meta["start"], pb.UploadModelStart())
        return UploadRecord(upload_id, tenant, start, part)

    def discard(self, upload_id: str) -> None:
        self.part(upload_id).unlink(missing_ok=True)
        self._meta(upload_id).unlink(missing_ok=True)

    @property
    def sweep_period_s(self) -> float:
        return min(self.ttl_s / 10, 60.0)

    def sweep(self, due_only: bool = True) -> int:
        """Deletes uploads with no new byte for the TTL (with due_only, at most once per
        sweep period); the number deleted. Cheap: one directory listing."""
        now = time.time()
        if due_only and now - self._swept_at < self.sweep_period_s:
            return 0
        self._swept_at = now
        deleted = 0
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime + self.ttl_s < now:
                        path.unlink(missing_ok=True)
                        deleted += path.suffix == ".part"
        if deleted:
            log.info("deleted %d expired upload(s) from %s", deleted, self.directory)
        return deleted

    async def sweep_forever(self) -> None:
        """Sweeps every sweep period until cancelled: a gateway that receives no new upload
        still deletes the ones its callers abandoned (the disk is not left to fill)."""
        while True:
            await asyncio.sleep(self.sweep_period_s)
            try:
                await asyncio.to_thread(self.sweep, False)
            except OSError as exc:
                log.warning("cannot sweep the uploads in %s: %s", self.directory, exc)

def check_resume(record: UploadRecord, start: pb.UploadModelStart) -> None:
    check_bound(record.start, record.upload_id, record.received_bytes(), start)


def check_bound(bound: pb.UploadModelStart, upload_id: str, received: int,
                start: pb.UploadModelStart) -> None:
    """FAILED_PRECONDITION when a resumed start declares another file or model than its
    upload (`bound`), or continues at another offset than the bytes received."""
    for name in BOUND_FIELDS:
        if getattr(start, name) != getattr(bound, name):
            raise FailedPrecondition(
                f"start.{name} differs from what upload {upload_id} was created with; "
                "a resumed upload sends the same start",
                violations=(FieldViolation(f"start.{name}", "differs from the upload's"),))
    if start.offset != received:
        raise FailedPrecondition(
            f"start.offset is {start.offset}; upload {upload_id} holds {received} "
            f"bytes: continue at offset {received}",
            violations=(FieldViolation("start.offset", f"must be {received}"),))


@contextlib.contextmanager
def exclusive(part: Path, upload_id: str) -> Iterator[BinaryIO]:
    """The part opened to append, for one stream at a time: UNAVAILABLE (retry) while
    another stream still writes it."""
    with part.open("ab") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(upload_id) from None
        yield f
