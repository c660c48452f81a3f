"""Models of any size: what RegisterModel and UploadModel check before the bytes, the
streamed upload written through to the artifact store, and the chunks of a download.

An upload lands in `<artifacts>/uploads/<id>.part`, hashed as it arrives; only when its
size and sha256 match what its first message declared, and its content passed the checks
of its kind, is it moved under its sha256 and the version registered. Whatever fails on the
way deletes the file: nothing half-registered is ever visible. A resumable upload
(gateway/upload_sessions.py) keeps its file across broken streams, until it is registered,
fails its checks or expires; with object storage it is kept in the bucket instead, as S3
multipart parts any gateway may continue (gateway/upload_sessions_s3.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.message import DecodeError

from gateway.auth import caller, require
from gateway.upload_sessions import UploadSessions, check_resume, exclusive, storage_error
from maas.errors import FieldViolation, InvalidArgument, MessageTooLarge
from maas.v1 import model_service_pb2 as pb
from runtime.architectures import Architecture, TensorSpec, get_architecture
from runtime.archives import check_specs
from runtime.artifacts import ArtifactStore
from runtime.weights import check_weights, sha256_hex
from scheduler import keys
from scheduler.artifact_gc import PendingReferences
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry, check_model_name

if TYPE_CHECKING:
    from gateway.upload_sessions_s3 import S3UploadSessions

MIB = 1 << 20
MAX_CHUNK_BYTES = 4 * MIB
DOWNLOAD_CHUNK_BYTES = 1 * MIB
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _invalid(field: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"{field} {why}", violations=(FieldViolation(field, why),))


class ChunkSink(Protocol):
    """Where `write_chunks` appends: a file, or the object store's part writer."""

    def write(self, chunk: bytes, /) -> object: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class WeightsPlan:
    model_id: str
    arch: Architecture
    config: dict[str, Any]


@dataclass(frozen=True)
class ArchivePlan:
    model_id: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


def _model_id(request: pb.RegisterModelRequest) -> str:
    check_model_name(request.name)
    if request.shared:
        require("admin", "registering a shared model (shared=true)")
    return keys.model_id("" if request.shared else caller().tenant, request.name)


def weights_plan(request: pb.RegisterModelRequest) -> WeightsPlan:
    """What a weights version will be, checked before its bytes are read."""
    arch = get_architecture(request.architecture)
    config = arch.resolve_config(request.config_json)
    return WeightsPlan(_model_id(request), arch, config)


def archive_plan(request: pb.RegisterModelRequest) -> ArchivePlan:
    """What an archive version will be, checked before its bytes are read."""
    mixed = [f for f in ("architecture", "config_json", "weights") if getattr(request, f)]
    if mixed:
        raise InvalidArgument(
            f"give either an archive or architecture + weights, not both (also set: "
            f"{', '.join(mixed)})", violations=tuple(
                FieldViolation(f, "not taken with an archive") for f in mixed))
    inputs = check_specs((TensorSpec(t.name, t.datatype, tuple(t.shape))
                          for t in request.inputs), "inputs")
    outputs = check_specs((TensorSpec(t.name, t.datatype, tuple(t.shape))
                           for t in request.outputs), "outputs")
    return ArchivePlan(_model_id(request), inputs, outputs)


def _specs(specs: list[TensorSpec]) -> list[pb.TensorSpec]:
    return [pb.TensorSpec(name=s.name, datatype=s.datatype, shape=s.shape) for s in specs]


async def add_weights_version(registry: ModelRegistry, queue: JobQueue, store: ArtifactStore,
                              plan: WeightsPlan, data: bytes | Path, sha256: str = ""
                              ) -> pb.ModelVersion:
    """Checks safetensors weights against the plan's architecture (only the header is read),
    stores them (an upload's file is moved in) and registers the next version; held from
    the store to the version (garbage collection spares them meanwhile)."""
    await asyncio.to_thread(check_weights, plan.arch, plan.config, data)
    async with held(queue, "weights", data, sha256):
        digest, size = await store_artifact(store, data, sha256, is_archive=False)
        await queue.ensure_group(plan.model_id)
        return await registry.add_version(pb.ModelVersion(
            model=plan.model_id, architecture=plan.arch.name,
            config_json=json.dumps(plan.config, sort_keys=True), weights_sha256=digest,
            weights_bytes=size, inputs=_specs(plan.arch.inputs(plan.config)),
            outputs=_specs(plan.arch.outputs(plan.config)), platform="pytorch",
            format=pb.ModelFormat.MODEL_FORMAT_SAFETENSORS))


@contextlib.asynccontextmanager
async def held(queue: JobQueue, kind: str, data: bytes | Path, sha256: str
               ) -> AsyncIterator[None]:
    """Holds the artifact `data` will be stored as (`sha256`, or its bytes' digest) until the
    block wrote its version: a garbage collector deleting it is waited for, and spares it
    from then on (scheduler/artifact_gc.py)."""
    if isinstance(data, bytes):
        sha256 = await asyncio.to_thread(sha256_hex, data)
    async with PendingReferences(queue.client).held(kind, sha256):
        yield


async def _messages(requests: AsyncIterator[pb.UploadModelRequest]
                    ) -> AsyncIterator[pb.UploadModelRequest]:
    """The stream's messages; INVALID_ARGUMENT for bytes that are not an UploadModelRequest."""
    try:
        async for message in requests:
            yield message
    except DecodeError as exc:
        raise InvalidArgument("a message of the stream is not an UploadModelRequest "
                              f"({exc})", violations=(FieldViolation("request", "corrupt"),)
                              ) from None


async def store_artifact(store: ArtifactStore, data: bytes | Path, sha256: str,
                         is_archive: bool) -> tuple[str, int]:
    """(sha256, size) of weights or an archive once in the store: bytes are written, an
    upload's checked file (of that `sha256`) is moved in."""
    if isinstance(data, Path):
        size = (await asyncio.to_thread(data.stat)).st_size
        await asyncio.to_thread(store.adopt, data, sha256, is_archive)
        return sha256, size
    put = store.put_archive if is_archive else (lambda d: store.put_weights(d)[0])
    return await asyncio.to_thread(put, data), len(data)


async def first_message(requests: AsyncIterator[pb.UploadModelRequest]
                        ) -> pb.UploadModelStart:
    """The upload's `start`; INVALID_ARGUMENT when the stream opens with anything else."""
    async for message in _messages(requests):
        if message.WhichOneof("kind") == "start":
            return message.start
        break
    raise _invalid("start", "must be the first message of UploadModel (then the chunks)")


def check_start(start: pb.UploadModelStart, max_bytes: int) -> None:
    if start.model.weights or start.model.archive:
        raise _invalid("start.model", "carries no bytes in UploadModel: send them as chunks")
    if not _SHA256.fullmatch(start.sha256):
        raise _invalid("start.sha256", "must be the file's sha256 as 64 lowercase hex digits")
    if start.size_bytes < 1:
        raise _invalid("start.size_bytes", f"must be the file's size, >= 1; got "
                                           f"{start.size_bytes}")
    if start.size_bytes > max_bytes:
        raise MessageTooLarge(f"a model of {start.size_bytes} bytes is over "
                              f"MAAS_MAX_MODEL_BYTES={max_bytes}")


async def write_chunks(requests: AsyncIterator[pb.UploadModelRequest],
                       start: pb.UploadModelStart, f: ChunkSink, digest: Any,
                       received: int) -> int:
    """Appends the chunks to `f` (holding `received` bytes hashed into `digest`), checking
    order and sizes before each write; the bytes held at the end."""
    async for message in _messages(requests):
        if message.WhichOneof("kind") != "chunk":
            raise _invalid("start", "was sent twice: only the first message is a start")
        chunk = message.chunk
        if len(chunk) > MAX_CHUNK_BYTES:
            raise _invalid("chunk", f"is {len(chunk)} bytes; at most {MAX_CHUNK_BYTES}")
        if received + len(chunk) > start.size_bytes:
            raise _invalid("chunk", f"goes past start.size_bytes={start.size_bytes}")
        digest.update(chunk)
        await asyncio.to_thread(f.write, chunk)
        received += len(chunk)
    await asyncio.to_thread(f.flush)
    return received


def check_complete(start: pb.UploadModelStart, received: int) -> None:
    if received != start.size_bytes:
        resume = f"; resume at offset {received}" if start.upload_id else ""
        raise _invalid("start.size_bytes", f"declared {start.size_bytes} bytes; the stream "
                                           f"ended after {received}{resume}")


def _prefix_digest(path: Path) -> Any:
    """The running sha256 of what an upload already holds (to continue it)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest


@contextlib.asynccontextmanager
async def _one_shot(requests: AsyncIterator[pb.UploadModelRequest], start: pb.UploadModelStart,
                    store: ArtifactStore) -> AsyncIterator[Path]:
    if start.offset:
        raise _invalid("start.offset", "must be 0 without start.upload_id")
    path = store.upload_path(uuid.uuid4().hex)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with path.open("wb") as f:
            check_complete(start, await write_chunks(requests, start, f, digest, 0))
        check_sha256(start, digest.hexdigest())
        yield path
    except OSError as exc:
        raise storage_error(exc, path.parent) from None
    finally:
        path.unlink(missing_ok=True)


def check_sha256(start: pb.UploadModelStart, hexdigest: str) -> None:
    if hexdigest != start.sha256:
        raise _invalid("start.sha256", "does not match the bytes received")


@contextlib.asynccontextmanager
async def _resumed(requests: AsyncIterator[pb.UploadModelRequest], start: pb.UploadModelStart,
                   sessions: UploadSessions, tenant: str) -> AsyncIterator[Path]:
    """A resumable upload's part once complete and checked. A broken stream keeps what
    arrived; a file that fails its checks (here or in the block) is discarded."""
    record = sessions.get(tenant, start.upload_id, "start.upload_id")
    try:
        with exclusive(record.part, record.upload_id) as f:
            check_resume(record, start)
            digest = await asyncio.to_thread(_prefix_digest, record.part)
            check_complete(start, await write_chunks(requests, start, f, digest,
                                                      start.offset))
            try:
                check_sha256(start, digest.hexdigest())
                yield record.part
            except InvalidArgument:
                sessions.discard(record.upload_id)
                raise
    except OSError as exc:
        raise storage_error(exc, sessions.directory) from None
    sessions.discard(record.upload_id)


@contextlib.asynccontextmanager
async def received(requests: AsyncIterator[pb.UploadModelRequest], start: pb.UploadModelStart,
                   store: ArtifactStore, max_bytes: int,
                   sessions: UploadSessions | S3UploadSessions) -> AsyncIterator[Path]:
    """The upload's checked file for the block (which moves it into the store). A one-shot
    upload's file is deleted when it is still there afterwards, whatever happened; a
    resumable one (start.upload_id) outlives a broken stream."""
    check_start(start, max_bytes)
    local = sessions if isinstance(sessions, UploadSessions) else sessions.local
    local.sweep()
    if not start.upload_id:
        async with _one_shot(requests, start, store) as path:
            yield path
        return
    if isinstance(sessions, UploadSessions):
        async with _resumed(requests, start, sessions, caller().tenant) as path:
            yield path
        return
    async with sessions.receive(requests, start, caller().tenant) as path:
        yield path


async def artifact_chunks(store: ArtifactStore, version: pb.ModelVersion
                          ) -> AsyncIterator[bytes]:
    """A version's weights or archive, read a chunk at a time."""
    is_weights = bool(version.weights_sha256)
    path = (store.weights_path(version.weights_sha256) if is_weights
            else store.archive_path(version.archive_sha256))
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, DOWNLOAD_CHUNK_BYTES):
            yield chunk


