"""Triton's model-repository extension on the v2 service: RepositoryIndex,
RepositoryModelLoad, RepositoryModelUnload, as `tritonclient` calls them.

maas has one repository (the registry), so `repository_name` is ignored. Unloading a model
marks it unloaded: it is not ready and ModelInfer answers UNAVAILABLE until it is loaded
again. A load with Triton's `file:<version>/model.pt` (TorchScript) or `model.pt2`
(torch.export) bytes parameter and a `config` JSON parameter registers the archive as the
model's next version; maas numbers versions itself, so `<version>` only has to be a number.
"""

from __future__ import annotations

import re

from gateway.auth import caller, require
from gateway.plane.models import ModelLifecycle
from maas.errors import FieldViolation, InvalidArgument, MaasError, shown
from maas.inference import grpc_service_pb2 as pb
from maas.v1.model_service_pb2 import ModelVersion
from runtime.archives import FILE_NAMES, TORCH_EXPORT, archive_format, triton_tensors
from runtime.artifacts import ArtifactStore
from scheduler import keys
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry, check_model_name, check_state

UNLOADED_REASON = "unloaded (RepositoryModelUnload); RepositoryModelLoad serves it again"
_FILE = re.compile(r"file:[1-9][0-9]{0,18}/(model\.pt2?)")
_Parameters = dict[str, pb.ModelRepositoryParameter]


def _bad_parameter(name: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"parameter {shown(name)}: {why}",
                           violations=(FieldViolation(f"parameters[{name!r}]", why),))


def _check_names(parameters: _Parameters, allowed: set[str], files: bool) -> None:
    for name in parameters:
        if name not in allowed and not (files and name.startswith("file:")):
            takes = ", ".join(sorted(allowed) + (["file:<version>/model.pt[2]"] if files else []))
            raise _bad_parameter(name, f"unknown parameter; this call takes {takes}")


def _model_name(name: str) -> str:
    if not name:
        raise InvalidArgument("model_name is required",
                              violations=(FieldViolation("model_name", "empty"),))
    check_model_name(name, field="model_name")
    return name


class ModelRepository:
    """The registry seen as Triton's model repository (the v2 servicer delegates here)."""

    def __init__(self, registry: ModelRegistry, queue: JobQueue, store: ArtifactStore,
                 verify_wait_s: float) -> None:
        self._registry = registry
        self._models = ModelLifecycle(registry, queue, store, verify_wait_s=verify_wait_s)

    async def index(self, request: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
        """Every version of every model the caller sees, READY or UNAVAILABLE (unloaded)."""
        entry = pb.RepositoryIndexResponse.ModelIndex
        found = []
        visible = await self._registry.visible(caller().tenant)
        for name in sorted(visible):
            model = await self._registry.get_model(visible[name])
            if model.unloaded and request.ready:
                continue
            found += [entry(name=name, version=v.version, state=state, reason=reason)
                      for v in model.versions
                      for state, reason in [_index_state(model.unloaded, v)]]
        return pb.RepositoryIndexResponse(models=found)

    async def load(self, request: pb.RepositoryModelLoadRequest
                   ) -> pb.RepositoryModelLoadResponse:
        """Serves an unloaded model again; with a `file:` parameter, registers a version."""
        name = _model_name(request.model_name)
        parameters = dict(request.parameters)
        _check_names(parameters, {"config"}, files=True)
        files = sorted(n for n in parameters if n.startswith("file:"))
        if not files:
            if "config" in parameters:
                raise _bad_parameter("config", "taken only with a file:<version>/model.pt[2] "
                                     "parameter (the archive the config describes)")
            await self._models.set_unloaded(name, False, "loading a model")
        else:
            model_id = await self._load_file(name, parameters, files)
            await self._registry.set_unloaded(model_id, False)
        return pb.RepositoryModelLoadResponse()

    async def _load_file(self, name: str, parameters: _Parameters, files: list[str]) -> str:
        if len(files) > 1:
            raise _bad_parameter(files[1], "one file per load: the model's archive")
        match = _FILE.fullmatch(files[0])
        if match is None:
            raise _bad_parameter(files[0], "name the archive file:<version>/model.pt "
                                 "(TorchScript) or file:<version>/model.pt2 (torch.export)")
        data = _bytes(parameters, files[0])
        if "config" not in parameters:
            raise _bad_parameter("config", "required with a file: the model's inputs and "
                                 "outputs as Triton's config JSON")
        inputs, outputs = triton_tensors(_string(parameters, "config"))
        require("train", "loading a model from files")
        fmt = archive_format(data, field=files[0])
        if FILE_NAMES[fmt] != match.group(1):
            kind = "torch.export" if fmt == TORCH_EXPORT else "TorchScript"
            raise _bad_parameter(files[0], f"the archive is {kind}; name it "
                                 f"file:<version>/{FILE_NAMES[fmt]}")
        model_id = keys.model_id(caller().tenant, name)
        await self._models.add_archive_version(model_id, data, inputs, outputs, field=files[0])
        return model_id

    async def unload(self, request: pb.RepositoryModelUnloadRequest
                     ) -> pb.RepositoryModelUnloadResponse:
        name = _model_name(request.model_name)
        _check_names(dict(request.parameters), {"unload_dependents"}, files=False)
        await self._models.set_unloaded(name, True, "unloading a model")
        return pb.RepositoryModelUnloadResponse()


def _index_state(unloaded: bool, version: ModelVersion) -> tuple[str, str]:
    """Triton's (state, reason) of a version: UNAVAILABLE when unloaded or not servable."""
    if unloaded:
        return "UNAVAILABLE", UNLOADED_REASON
    try:
        check_state(version)
    except MaasError as exc:
        return "UNAVAILABLE", str(exc)
    return "READY", ""


def _bytes(parameters: _Parameters, name: str) -> bytes:
    if parameters[name].WhichOneof("parameter_choice") != "bytes_param":
        raise _bad_parameter(name, "must be a bytes_param (the archive)")
    return parameters[name].bytes_param


def _string(parameters: _Parameters, name: str) -> str:
    if parameters[name].WhichOneof("parameter_choice") != "string_param":
        raise _bad_parameter(name, "must be a string_param (JSON)")
    return parameters[name].string_param
