"""maas.v1.ModelService: register, list and describe models; aliases and version deletion.

A tenant sees its own models and the shared catalog, by name; below the gateway a model is
its id `<tenant>/<name>` (scheduler/keys.py), which never leaves the gateway. Changing a
model (aliases, deleting versions, unloading) needs the `train` scope, and `admin` for a
model of the shared catalog.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from gateway.auth import caller, require
from gateway.bounds import page_size
from gateway.uploads import (
    ArchivePlan,
    add_weights_version,
    archive_plan,
    artifact_chunks,
    first_message,
    received,
    store_artifact,
    weights_plan,
)
from maas.architectures import TensorSpec
from maas.archives import PLATFORMS, archive_format, check_code
from maas.artifacts import ArtifactStore
from maas.errors import FieldViolation, InvalidArgument, MessageTooLarge, ModelNotFound, shown
from maas.v1 import model_service_pb2 as pb
from maas.v1.model_service_pb2_grpc import ModelServiceServicer
from maas.weights import sha256_hex
from scheduler import keys
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry, check_alias, check_model_name

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


async def changed_model_id(registry: ModelRegistry, name: str, what: str) -> str:
    """The id of the model `name` means to the caller, for a change: NOT_FOUND when there is
    none; needs `train`, and `admin` for a shared model."""
    require("train", what)
    tenant = caller().tenant
    try:
        model_id = await registry.visible_id(tenant, name)
    except InvalidArgument:
        raise ModelNotFound(f"model {shown(name)} is not registered") from None
    await registry.get_model(model_id)  # NOT_FOUND before the shared-model question
    if keys.split_model_id(model_id)[0] != tenant:
        require("admin", f"{what} of the shared model {name!r}")
    return model_id


async def add_archive_version(registry: ModelRegistry, queue: JobQueue, store: ArtifactStore,
                              model_id: str, data: bytes | Path, inputs: list[TensorSpec],
                              outputs: list[TensorSpec], field: str = "archive",
                              wait_s: float = VERIFY_WAIT_S, sha256: str = ""
                              ) -> pb.ModelVersion:
    """Checks a TorchScript / torch.export archive's layout and code (no torch here), stores
    it as the model's next version, VERIFYING, and waits up to `wait_s` for a worker's
    verdict: INVALID_ARGUMENT naming what is not allowed when it is refused; the version
    (READY, or still VERIFYING when no verdict came in time) otherwise. `data` is the
    archive, or the checked file of an upload (with its `sha256`), moved into the store."""
    fmt = await asyncio.to_thread(archive_format, data, field)
    violations = await asyncio.to_thread(check_code, data)
    if violations:
        raise _refused(field, violations)
    digest, size = await store_artifact(store, data, sha256, is_archive=True)
    await queue.ensure_group(model_id)
    stored = await registry.add_version(pb.ModelVersion(
        model=model_id, format=fmt, archive_sha256=digest, archive_bytes=size,
        inputs=_specs(inputs), outputs=_specs(outputs), platform=PLATFORMS[fmt],
        state=pb.ModelVersionState.MODEL_VERSION_STATE_VERIFYING), is_latest=False)
    await registry.verification.submit(model_id, stored.version)
    verdict = await _verdict(registry, stored, wait_s)
    if verdict.state == pb.ModelVersionState.MODEL_VERSION_STATE_REJECTED:
        raise _refused(field, [verdict.state_reason])
    return verdict


async def _verdict(registry: ModelRegistry, version: pb.ModelVersion,
                   wait_s: float) -> pb.ModelVersion:
    """The version once a worker judged it, or as it is when `wait_s` runs out."""
    deadline = asyncio.get_running_loop().time() + wait_s
    current = version
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(VERIFY_POLL_S)
        found = await registry.fresh_version(version.model, version.version)
        if found is None:
            raise ModelNotFound(f"version {version.version} was deleted while being verified")
        current = found
        if current.state != pb.ModelVersionState.MODEL_VERSION_STATE_VERIFYING:
            break
    return current


def _refused(field: str, violations: list[str]) -> InvalidArgument:
    listed = "; ".join(violations[:MAX_VIOLATIONS_SHOWN])
    more = len(violations) - MAX_VIOLATIONS_SHOWN
    return InvalidArgument(
        f"{field}: {listed}{f' (and {more} more)' if more > 0 else ''}; an uploaded model may "
        "use only pure tensor operators (see README, Security)", reason="ARCHIVE_NOT_ALLOWED",
        violations=tuple(FieldViolation(field, v) for v in violations[:MAX_VIOLATIONS_SHOWN]))


class ModelServicer(ModelServiceServicer):
    def __init__(self, registry: ModelRegistry, queue: JobQueue, store: ArtifactStore,
                 max_message_bytes: int, verify_wait_s: float = VERIFY_WAIT_S,
                 max_model_bytes: int = 64 << 30) -> None:
        self._max_model_bytes = max_model_bytes
        self._verify_wait_s = verify_wait_s
        self._registry = registry
        self._queue = queue
        self._store = store
        self._max_message_bytes = max_message_bytes

    async def ListModels(self, request: pb.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE)
        if request.page_token:  # the last model name of the page before, as handed out
            check_model_name(request.page_token, field="page_token")
        visible = await self._registry.visible(caller().tenant)
        names = sorted(n for n in visible if n > request.page_token)
        page = names[:size]
        return pb.ListModelsResponse(
            models=[public_model(await self._registry.get_model(visible[n])) for n in page],
            next_page_token=page[-1] if len(names) > size else "")

    async def GetModel(self, request: pb.GetModelRequest,
                       context: grpc.aio.ServicerContext) -> pb.GetModelResponse:
        try:
            model_id = await self._registry.visible_id(caller().tenant, request.name)
        except InvalidArgument:
            raise ModelNotFound(f"model {shown(request.name)} is not registered") from None
        return pb.GetModelResponse(model=public_model(await self._registry.get_model(model_id)))

    async def RegisterModel(self, request: pb.RegisterModelRequest,
                            context: grpc.aio.ServicerContext) -> pb.RegisterModelResponse:
        if request.ByteSize() > self._max_message_bytes:
            raise MessageTooLarge(
                f"weights of {len(request.weights)} bytes exceed MAAS_MAX_MESSAGE_BYTES="
                f"{self._max_message_bytes}; raise the setting on gateway and client")
        check_model_name(request.name)
        if request.archive:
            return await self._register_archive(request)
        if request.weights_sha256 and request.weights_sha256 != sha256_hex(request.weights):
            raise InvalidArgument("weights_sha256 does not match the uploaded weights",
                                  violations=(FieldViolation("weights_sha256", "mismatch"),))
        plan = weights_plan(request)
        stored = await add_weights_version(self._registry, self._queue, self._store, plan,
                                           request.weights)
        return pb.RegisterModelResponse(model_version=public_version(stored))

    async def _register_archive(self, request: pb.RegisterModelRequest
                                ) -> pb.RegisterModelResponse:
        if request.weights_sha256 and request.weights_sha256 != sha256_hex(request.archive):
            raise InvalidArgument("weights_sha256 does not match the uploaded archive",
                                  violations=(FieldViolation("weights_sha256", "mismatch"),))
        plan = archive_plan(request)
        stored = await add_archive_version(self._registry, self._queue, self._store,
                                           plan.model_id, request.archive, plan.inputs,
                                           plan.outputs, wait_s=self._verify_wait_s)
        return pb.RegisterModelResponse(model_version=public_version(stored))

    async def UploadModel(self, request_iterator: AsyncIterator[pb.UploadModelRequest],
                          context: grpc.aio.ServicerContext) -> pb.UploadModelResponse:
        require("train", "uploading a model")
        start = await first_message(request_iterator)
        plan = archive_plan(start.model) if start.is_archive else weights_plan(start.model)
        async with received(request_iterator, start, self._store,
                            self._max_model_bytes) as path:
            if isinstance(plan, ArchivePlan):
                stored = await add_archive_version(
                    self._registry, self._queue, self._store, plan.model_id, path, plan.inputs,
                    plan.outputs, wait_s=self._verify_wait_s, sha256=start.sha256)
            else:
                stored = await add_weights_version(self._registry, self._queue, self._store,
                                                   plan, path, start.sha256)
        return pb.UploadModelResponse(model_version=public_version(stored))

    async def DownloadModel(self, request: pb.DownloadModelRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[pb.DownloadModelResponse]:
        require("infer", "downloading a model")
        try:
            version = await self._registry.resolve_visible(caller().tenant, request.name,
                                                           request.version)
        except InvalidArgument:
            raise ModelNotFound(f"model {shown(request.name)} is not registered") from None
        yield pb.DownloadModelResponse(model_version=public_version(version))
        async for chunk in artifact_chunks(self._store, version):
            yield pb.DownloadModelResponse(chunk=chunk)

    async def SetModelAlias(self, request: pb.SetModelAliasRequest,
                            context: grpc.aio.ServicerContext) -> pb.SetModelAliasResponse:
        check_alias(request.alias)
        model_id = await changed_model_id(self._registry, request.name, "setting an alias")
        previous = await self._registry.set_alias(model_id, request.alias, request.version)
        return pb.SetModelAliasResponse(
            model=public_model(await self._registry.get_model(model_id)),
            previous_version=previous)

    async def DeleteModelAlias(self, request: pb.DeleteModelAliasRequest,
                               context: grpc.aio.ServicerContext) -> pb.DeleteModelAliasResponse:
        check_alias(request.alias)
        model_id = await changed_model_id(self._registry, request.name, "deleting an alias")
        await self._registry.delete_alias(model_id, request.alias)
        return pb.DeleteModelAliasResponse(
            model=public_model(await self._registry.get_model(model_id)))

    async def DeleteModelVersion(self, request: pb.DeleteModelVersionRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> pb.DeleteModelVersionResponse:
        model_id = await changed_model_id(self._registry, request.name, "deleting a version")
        await self._registry.delete_version(model_id, request.version)
        return pb.DeleteModelVersionResponse(
            model=public_model(await self._registry.get_model(model_id)))
