"""ModelLifecycle: register, upload, download, list and describe models; aliases, deletion.

Transport-free: it takes and returns maas.v1 protobufs; ModelService (gateway/models.py) and
Triton's repository extension (gateway/repository.py) only translate. The caller is the call's
identity (gateway.auth.caller, as gateway/uploads.py's plans read it): a tenant sees its own
models and the shared catalog, by name; below the gateway a model is its id `<tenant>/<name>`
(scheduler/keys.py), which never leaves here (`public_model`, `public_version`). Changing a
model (aliases, deleting versions, unloading) needs the `train` scope, and `admin` for a model
of the shared catalog.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.auth import caller, require
from gateway.bounds import page_size
from gateway.upload_sessions import UploadSessions, resumable_uploads
from gateway.uploads import (
    ArchivePlan,
    add_weights_version,
    archive_plan,
    artifact_chunks,
    check_start,
    first_message,
    held,
    received,
    store_artifact,
    weights_plan,
)
from maas.errors import (
    ArchiveNotAllowed,
    FieldViolation,
    InvalidArgument,
    MessageTooLarge,
    ModelNotFound,
    shown,
)
from maas.v1 import model_service_pb2 as pb
from runtime.architectures import TensorSpec
from runtime.archives import PLATFORMS, archive_format, check_code
from runtime.artifacts import ArtifactStore
from runtime.settings import Settings
from runtime.weights import sha256_hex
from scheduler import keys
from scheduler.artifact_gc import ArtifactCollector
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry, check_alias, check_model_name

if TYPE_CHECKING:
    from gateway.upload_sessions_s3 import S3UploadSessions

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
# How long registering an archive waits for a worker's verdict by default (then it answers
# VERIFYING); the gateway passes MAAS_VERIFY_TIMEOUT_S.
VERIFY_WAIT_S = 120.0
VERIFY_POLL_S = 0.1
MAX_VIOLATIONS_SHOWN = 5


def _specs(specs: list[TensorSpec]) -> list[pb.TensorSpec]:
    return [pb.TensorSpec(name=s.name, datatype=s.datatype, shape=s.shape) for s in specs]


def public_version(version: pb.ModelVersion) -> pb.ModelVersion:
    """A version as its owner names it: without the tenant in `model`."""
    tenant, name = keys.split_model_id(version.model)
    if not tenant:
        return version
    out = pb.ModelVersion()
    out.CopyFrom(version)  # registry caches are shared: never change them in place
    out.model = name
    return out


def public_model(model: pb.Model) -> pb.Model:
    tenant, name = keys.split_model_id(model.name)
    return pb.Model(name=name, versions=[public_version(v) for v in model.versions],
                    latest_version=model.latest_version, shared=not tenant,
                    aliases=model.aliases, unloaded=model.unloaded)


def _refused(field: str, violations: list[str]) -> InvalidArgument:
    listed = "; ".join(violations[:MAX_VIOLATIONS_SHOWN])
    more = len(violations) - MAX_VIOLATIONS_SHOWN
    return ArchiveNotAllowed(
        f"{field}: {listed}{f' (and {more} more)' if more > 0 else ''}; an uploaded model may "
        "use only pure tensor operators (see README, Security)",
        violations=tuple(FieldViolation(field, v) for v in violations[:MAX_VIOLATIONS_SHOWN]))


def _check_sha256(request: pb.RegisterModelRequest) -> None:
    data, what = (request.archive, "archive") if request.archive else (request.weights,
                                                                       "weights")
    if request.weights_sha256 and request.weights_sha256 != sha256_hex(data):
        raise InvalidArgument(f"weights_sha256 does not match the uploaded {what}",
                              violations=(FieldViolation("weights_sha256", "mismatch"),))


class ModelLifecycle:
    def __init__(self, registry: ModelRegistry, queue: JobQueue, store: ArtifactStore, *,
                 verify_wait_s: float = VERIFY_WAIT_S,
                 max_message_bytes: int = Settings.max_message_bytes,
                 max_model_bytes: int = Settings.max_model_bytes,
                 upload_ttl_s: float = Settings.upload_ttl_s) -> None:
        self._registry = registry
        self._uploads = resumable_uploads(store, queue, upload_ttl_s)
        if isinstance(self._uploads, UploadSessions):
            self._uploads.sweep()  # what a gateway that stopped left behind
        self._queue = queue
        self._store = store
        self._verify_wait_s = verify_wait_s
        self._max_message_bytes = max_message_bytes
        self._max_model_bytes = max_model_bytes

    @property
    def uploads(self) -> UploadSessions | S3UploadSessions:
        """The resumable uploads in progress (the gateway sweeps them: `sweep_forever`)."""
        return self._uploads

    # --- reading ------------------------------------------------------------------------------

    async def list_models(self, size: int, page_token: str) -> tuple[list[pb.Model], str]:
        """A page of the models the caller sees, by name, and the next page's token."""
        count = page_size(size, DEFAULT_PAGE_SIZE)
        if page_token:  # the last model name of the page before, as handed out
            check_model_name(page_token, field="page_token")
        visible = await self._registry.visible(caller().tenant)
        names = sorted(n for n in visible if n > page_token)
        page = names[:count]
        return ([public_model(await self._registry.get_model(visible[n])) for n in page],
                page[-1] if len(names) > count else "")

    async def get(self, name: str) -> pb.Model:
        try:
            model_id = await self._registry.visible_id(caller().tenant, name)
        except InvalidArgument:
            raise ModelNotFound(f"model {shown(name)} is not registered") from None
        return public_model(await self._registry.get_model(model_id))

    async def download(self, name: str, version: str
                       ) -> AsyncGenerator[pb.ModelVersion | bytes, None]:
        """The version (first), then its weights or archive a chunk at a time."""
        require("infer", "downloading a model")
        try:
            found = await self._registry.resolve_visible(caller().tenant, name, version)
        except InvalidArgument:
            raise ModelNotFound(f"model {shown(name)} is not registered") from None
        yield public_version(found)
        async for chunk in artifact_chunks(self._store, found):
            yield chunk

    # --- registering --------------------------------------------------------------------------

    async def register(self, request: pb.RegisterModelRequest) -> pb.ModelVersion:
        """Registers weights (or an archive) sent in one message as the next version."""
        if request.ByteSize() > self._max_message_bytes:
            raise MessageTooLarge(
                f"weights of {len(request.weights)} bytes exceed MAAS_MAX_MESSAGE_BYTES="
                f"{self._max_message_bytes}; raise the setting on gateway and client")
        check_model_name(request.name)
        _check_sha256(request)
        if request.archive:
            plan = archive_plan(request)
            stored = await self.add_archive_version(plan.model_id, request.archive,
                                                    plan.inputs, plan.outputs)
        else:
            stored = await add_weights_version(self._registry, self._queue, self._store,
                                               weights_plan(request), request.weights)
        return public_version(stored)

    async def upload(self, requests: AsyncIterator[pb.UploadModelRequest]) -> pb.ModelVersion:
        """Registers weights (or an archive) streamed in chunks as the next version."""
        require("train", "uploading a model")
        start = await first_message(requests)
        plan = archive_plan(start.model) if start.is_archive else weights_plan(start.model)
        async with received(requests, start, self._store, self._max_model_bytes,
                            self._uploads) as path:
            if isinstance(plan, ArchivePlan):
                stored = await self.add_archive_version(plan.model_id, path, plan.inputs,
                                                        plan.outputs, sha256=start.sha256)
            else:
                stored = await add_weights_version(self._registry, self._queue, self._store,
                                                   plan, path, start.sha256)
        return public_version(stored)

    async def create_upload(self, start: pb.UploadModelStart) -> pb.ModelUpload:
        """Opens a resumable upload of `start` (checked as UploadModel checks it)."""
        require("train", "uploading a model")
        if start.is_archive:
            archive_plan(start.model)
        else:
            weights_plan(start.model)
        check_start(start, self._max_model_bytes)
        return await self._uploads.open(caller().tenant, start)

    async def get_upload(self, upload_id: str) -> pb.ModelUpload:
        """Where the caller's upload stands: bytes received, expiry."""
        require("train", "uploading a model")
        return await self._uploads.describe(caller().tenant, upload_id)

    async def add_archive_version(self, model_id: str, data: bytes | Path,
                                  inputs: list[TensorSpec], outputs: list[TensorSpec],
                                  field: str = "archive", sha256: str = "") -> pb.ModelVersion:
        """Checks a TorchScript / torch.export archive's layout and code (no torch here),
        stores it as the model's next version, VERIFYING, and waits up to the verify wait
        for a worker's verdict: INVALID_ARGUMENT naming what is not allowed when it is
        refused; the version (READY, or still VERIFYING when no verdict came in time)
        otherwise. `data` is the archive, or the checked file of an upload (with its
        `sha256`), moved into the store."""
        fmt = await asyncio.to_thread(archive_format, data, field)
        violations = await asyncio.to_thread(check_code, data)
        if violations:
            raise _refused(field, violations)
        async with held(self._queue, "archives", data, sha256):
            digest, size = await store_artifact(self._store, data, sha256, is_archive=True)
            await self._queue.ensure_group(model_id)
            stored = await self._registry.add_version(pb.ModelVersion(
                model=model_id, format=fmt, archive_sha256=digest, archive_bytes=size,
                inputs=_specs(inputs), outputs=_specs(outputs), platform=PLATFORMS[fmt],
                state=pb.ModelVersionState.MODEL_VERSION_STATE_VERIFYING), is_latest=False)
        await self._registry.verification.submit(model_id, stored.version)
        verdict = await self._verdict(stored)
        if verdict.state == pb.ModelVersionState.MODEL_VERSION_STATE_REJECTED:
            raise _refused(field, [verdict.state_reason])
        return verdict

    async def _verdict(self, version: pb.ModelVersion) -> pb.ModelVersion:
        """The version once a worker judged it, or as it is when the verify wait runs out."""
        deadline = asyncio.get_running_loop().time() + self._verify_wait_s
        current = version
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(VERIFY_POLL_S)
            found = await self._registry.fresh_version(version.model, version.version)
            if found is None:
                raise ModelNotFound(f"version {version.version} was deleted while being "
                                    "verified")
            current = found
            if current.state != pb.ModelVersionState.MODEL_VERSION_STATE_VERIFYING:
                break
        return current

    # --- changing -----------------------------------------------------------------------------

    async def changed_model_id(self, name: str, what: str) -> str:
        """The id of the model `name` means to the caller, for a change: NOT_FOUND when there
        is none; needs `train`, and `admin` for a shared model."""
        require("train", what)
        tenant = caller().tenant
        try:
            model_id = await self._registry.visible_id(tenant, name)
        except InvalidArgument:
            raise ModelNotFound(f"model {shown(name)} is not registered") from None
        await self._registry.get_model(model_id)  # NOT_FOUND before the shared-model question
        if keys.split_model_id(model_id)[0] != tenant:
            require("admin", f"{what} of the shared model {name!r}")
        return model_id

    async def set_alias(self, name: str, alias: str, version: str) -> tuple[pb.Model, str]:
        """Points `alias` at `version`; the model and the version it pointed at before."""
        check_alias(alias)
        model_id = await self.changed_model_id(name, "setting an alias")
        previous = await self._registry.set_alias(model_id, alias, version)
        return public_model(await self._registry.get_model(model_id)), previous

    async def delete_alias(self, name: str, alias: str) -> pb.Model:
        check_alias(alias)
        model_id = await self.changed_model_id(name, "deleting an alias")
        await self._registry.delete_alias(model_id, alias)
        return public_model(await self._registry.get_model(model_id))

    async def delete_version(self, name: str, version: str) -> pb.Model:
        model_id = await self.changed_model_id(name, "deleting a version")
        deleted = await self._registry.delete_version(model_id, version)
        try:  # its artifacts go now if nothing else references them; else the daemon's sweep
            await ArtifactCollector(self._queue.client, self._store).free(deleted)
        except Exception as exc:  # the version is gone either way: never fail the delete
            log.warning("artifacts of %s version %s left to the sweep: %s", model_id,
                        version, exc)
        return public_model(await self._registry.get_model(model_id))

    async def set_unloaded(self, name: str, unloaded: bool, what: str) -> None:
        """Marks a model unloaded (not served) or serves it again."""
        await self._registry.set_unloaded(await self.changed_model_id(name, what), unloaded)
