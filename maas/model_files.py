"""Model files over the wire: UploadModel's messages from bytes or a file (never read
whole), and DownloadModel's answers written back to files that load without maas.

An upload is resumable (CreateModelUpload): when its stream breaks, the client asks where
the gateway stands (GetModelUpload) and continues from there, a bounded number of times.

A download writes the weights or archive under its usual name (`model.safetensors`,
`model.pt`, `model.pt2`) and `manifest.json` (the version: architecture and config or
tensor specs, sha256, lineage), checking the sha256 as it writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from google.protobuf.json_format import MessageToDict

from maas.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    MaasError,
    QuotaExceeded,
    Unavailable,
)
from maas.v1 import model_service_pb2 as mpb

CHUNK_BYTES = 2 << 20
Progress = Callable[[int], None]  # called with each chunk's size
# Uploads get at least size / this many seconds, whatever the client's timeout.
UPLOAD_FLOOR_BYTES_PER_S = 1 << 20
# Attempts of one upload: the first, then resumes where the gateway says it stands.
UPLOAD_ATTEMPTS = 6
RESUME_BACKOFF_S = 0.25
# Smaller uploads go in one UploadModel call (nothing worth resuming; one rate-limit token).
RESUMABLE_FROM_BYTES = 4 * CHUNK_BYTES
# A rate limit's retry delay an upload waits out (longer ones end the upload).
MAX_RATE_LIMIT_WAIT_S = 5.0
FILE_NAMES = {mpb.ModelFormat.MODEL_FORMAT_TORCHSCRIPT: "model.pt",
              mpb.ModelFormat.MODEL_FORMAT_TORCH_EXPORT: "model.pt2"}


def _pieces(data: bytes | Path, offset: int = 0) -> Iterator[bytes]:
    if isinstance(data, bytes):
        for at in range(offset, len(data), CHUNK_BYTES):
            yield data[at:at + CHUNK_BYTES]
        return
    with data.open("rb") as f:
        f.seek(offset)
        while chunk := f.read(CHUNK_BYTES):
            yield chunk


def file_digest(data: bytes | Path) -> tuple[str, int]:
    """(hex sha256, size) of bytes or of a file, read a chunk at a time."""
    digest, size = hashlib.sha256(), 0
    for chunk in _pieces(data):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def upload_messages(model: mpb.RegisterModelRequest, data: bytes | Path, is_archive: bool,
                    progress: Progress | None = None) -> Iterator[mpb.UploadModelRequest]:
    """UploadModel's stream: the start (size and sha256 computed first), then the chunks."""
    sha256, size = file_digest(data)
    yield mpb.UploadModelRequest(start=mpb.UploadModelStart(
        model=model, is_archive=is_archive, size_bytes=size, sha256=sha256))
    for chunk in _pieces(data):
        yield mpb.UploadModelRequest(chunk=chunk)
        if progress is not None:
            progress(len(chunk))


class UploadProgress:
    """Calls `progress` with each chunk's size once: bytes sent again after a resume (the
    gateway had not received them) are not counted twice."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self.reported = 0

    def at(self, position: int) -> None:
        if self._progress is not None and position > self.reported:
            self._progress(position - self.reported)
        self.reported = max(self.reported, position)


def upload_start(model: mpb.RegisterModelRequest, data: bytes | Path, is_archive: bool
                 ) -> mpb.UploadModelStart:
    """UploadModel's first message (size and sha256 computed, a chunk at a time)."""
    sha256, size = file_digest(data)
    return mpb.UploadModelStart(model=model, is_archive=is_archive, size_bytes=size,
                                sha256=sha256)


def resumed_messages(start: mpb.UploadModelStart, data: bytes | Path, offset: int,
                     progress: UploadProgress) -> Iterator[mpb.UploadModelRequest]:
    """UploadModel's stream continuing upload `start.upload_id` at `offset`."""
    first = mpb.UploadModelStart()
    first.CopyFrom(start)
    first.offset = offset
    yield mpb.UploadModelRequest(start=first)
    for chunk in _pieces(data, offset):
        yield mpb.UploadModelRequest(chunk=chunk)
        offset += len(chunk)
        progress.at(offset)


def is_resumable(err: MaasError, attempt: int) -> bool:
    """Whether an upload's attempt failed in a way another attempt may fix: a broken or
    timed-out stream, a busy or unreachable gateway, an offset that moved meanwhile."""
    if attempt >= UPLOAD_ATTEMPTS:
        return False
    if isinstance(err, Unavailable | Cancelled | DeadlineExceeded):
        return True
    if is_rate_limited(err):
        return True
    return isinstance(err, FailedPrecondition) and any(
        v.field == "start.offset" for v in err.violations)


def is_rate_limited(err: MaasError) -> bool:
    """The tenant's rate limit refused the call before its stream began (nothing was
    received: the upload goes on from where it stood, after the delay the gateway gave)."""
    return isinstance(err, QuotaExceeded) and err.retry_delay_s is not None \
        and err.retry_delay_s <= MAX_RATE_LIMIT_WAIT_S


def resume_delay_s(err: MaasError, attempt: int) -> float:
    return err.retry_delay_s or min(RESUME_BACKOFF_S * 2 ** (attempt - 1), 8.0)


def is_small(data: bytes | Path) -> bool:
    """Whether an upload goes in one call (below RESUMABLE_FROM_BYTES)."""
    size = len(data) if isinstance(data, bytes) else data.stat().st_size
    return size < RESUMABLE_FROM_BYTES


def upload_source(given: bytes | Path | str) -> bytes | Path:
    """What `upload_messages` reads: bytes as given, else the file at a path."""
    return given if isinstance(given, bytes) else Path(given)


def upload_timeout_s(data: bytes | Path, timeout_s: float) -> float:
    """An upload's deadline: `timeout_s`, or longer for a large model (size at
    UPLOAD_FLOOR_BYTES_PER_S)."""
    size = len(data) if isinstance(data, bytes) else data.stat().st_size
    return max(timeout_s, size / UPLOAD_FLOOR_BYTES_PER_S)


def file_name(version: mpb.ModelVersion) -> str:
    return FILE_NAMES.get(version.format, "model.safetensors")


class DownloadWriter:
    """Writes DownloadModel's answer into `out_dir` as it arrives: the file, then (`finish`)
    manifest.json, once the bytes match the version's sha256."""

    def __init__(self, out_dir: Path, progress: Progress | None = None) -> None:
        self._out_dir, self._progress = out_dir, progress
        self._digest = hashlib.sha256()
        self._version: mpb.ModelVersion | None = None
        self._file: BinaryIO | None = None

    def write(self, message: mpb.DownloadModelResponse) -> None:
        """One message: the version first, then the file's chunks."""
        if self._file is None:
            self._version = message.model_version
            self._out_dir.mkdir(parents=True, exist_ok=True)
            self._file = (self._out_dir / file_name(self._version)).open("wb")
            return
        self._file.write(message.chunk)
        self._digest.update(message.chunk)
        if self._progress is not None:
            self._progress(len(message.chunk))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def finish(self) -> mpb.ModelVersion:
        """The version written; MaasError (and no file) when the bytes do not match."""
        version = self._version
        if version is None:
            raise MaasError("the download ended before it began; try again")
        target = self._out_dir / file_name(version)
        expected = version.weights_sha256 or version.archive_sha256
        if self._digest.hexdigest() != expected:
            target.unlink(missing_ok=True)
            raise MaasError(f"the download of {version.model}:{version.version} does not "
                            f"match its sha256 {expected}; try again")
        manifest = MessageToDict(version, preserving_proto_field_name=True)
        manifest["file"] = target.name
        (self._out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2,
                                                                sort_keys=True))
        return version
