"""The SDK's methods written once (see maas/calls.py): inference, async jobs, explanations,
models, the queue's admin calls and API keys. Each builds and validates its requests, yields
the calls and decodes the replies; `Client` and `AsyncClient` only send. The training and
dataset methods are in maas/training_client.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maas.calls import NO_DEADLINE, Consume, Operation, Sleep, Stream, Unary
from maas.errors import MaasError
from maas.explanation import Explanation, explain_request, explanation_of
from maas.inference import grpc_service_pb2 as v2
from maas.messages import (
    TensorSpecs,
    archive_request,
    infer_outputs,
    infer_request,
    register_request,
    submit_request,
)
from maas.model_files import (
    DownloadWriter,
    Progress,
    UploadProgress,
    is_rate_limited,
    is_resumable,
    is_small,
    resume_delay_s,
    resumed_messages,
    upload_messages,
    upload_source,
    upload_start,
    upload_timeout_s,
)
from maas.v1 import inference_service_pb2 as ipb
from maas.v1 import key_service_pb2 as kpb
from maas.v1 import model_service_pb2 as mpb
from maas.v1 import queue_service_pb2 as qpb

log = logging.getLogger(__name__)


def infer(model: str, inputs: Mapping[str, Any], version: str, outputs: Sequence[str],
          priority: int, timeout_s: float | None) -> Operation[dict[str, np.ndarray]]:
    reply = yield Unary("v2", "ModelInfer", infer_request(model, inputs, version, outputs,
                                                          priority), timeout_s)
    return infer_outputs(reply)


def model_metadata(model: str, version: str) -> Operation[v2.ModelMetadataResponse]:
    reply = yield Unary("v2", "ModelMetadata", v2.ModelMetadataRequest(name=model,
                                                                       version=version))
    return reply  # type: ignore[no-any-return]


def model_config(model: str, version: str) -> Operation[v2.ModelConfig]:
    reply = yield Unary("v2", "ModelConfig", v2.ModelConfigRequest(name=model, version=version))
    return reply.config  # type: ignore[no-any-return]


def is_ready() -> Operation[bool]:
    reply = yield Unary("v2", "ServerReady", v2.ServerReadyRequest())
    return bool(reply.ready)


def submit(model: str, inputs: Mapping[str, Any], version: str, outputs: Sequence[str],
           priority: int, request_id: str, deadline_s: float | None
           ) -> Operation[ipb.InferenceJob]:
    request = submit_request(model, inputs, version, outputs, priority, request_id, deadline_s)
    reply = yield Unary("jobs", "SubmitInference", request)
    return reply.job  # type: ignore[no-any-return]


def get_job(job_id: str) -> Operation[ipb.InferenceJob]:
    reply = yield Unary("jobs", "GetJob", ipb.GetJobRequest(job_id=job_id))
    return reply.job  # type: ignore[no-any-return]


def wait_job(job_id: str, timeout_s: float) -> Operation[ipb.InferenceJob]:
    """The job once ended, or as it is after timeout_s (the call's deadline: 5 s more)."""
    request = ipb.WaitJobRequest(job_id=job_id, timeout_ms=int(timeout_s * 1000))
    reply = yield Unary("jobs", "WaitJob", request, timeout_s + 5)
    return reply.job  # type: ignore[no-any-return]


def cancel_job(job_id: str) -> Operation[ipb.InferenceJob]:
    reply = yield Unary("jobs", "CancelJob", ipb.CancelJobRequest(job_id=job_id))
    return reply.job  # type: ignore[no-any-return]


def explain(model: str, inputs: Mapping[str, Any], version: str, method: str,
            target: int | None, baselines: Mapping[str, Any] | None, n_steps: int,
            timeout_s: float | None) -> Operation[Explanation]:
    request = explain_request(model, inputs, version, method, target, baselines, n_steps)
    return explanation_of((yield Unary("jobs", "Explain", request, timeout_s)))


def register_model(name: str, architecture: str, weights: bytes | Path | str,
                   config: Mapping[str, Any] | str | None, shared: bool,
                   progress: Progress | None, timeout_s: float) -> Operation[mpb.ModelVersion]:
    request = register_request(name, architecture, b"", config, shared)
    return (yield from upload(request, upload_source(weights), False, progress, timeout_s))


def upload_model(name: str, archive: bytes | Path | str, inputs: TensorSpecs,
                 outputs: TensorSpecs, shared: bool, progress: Progress | None,
                 timeout_s: float) -> Operation[mpb.ModelVersion]:
    request = archive_request(name, b"", inputs, outputs, shared)
    return (yield from upload(request, upload_source(archive), True, progress, timeout_s))


def upload(model: mpb.RegisterModelRequest, data: bytes | Path, is_archive: bool,
           progress: Progress | None, timeout_s: float) -> Operation[mpb.ModelVersion]:
    """A resumable upload: a broken stream continues where the gateway stands (a small one
    is one UploadModel call). A large model gets a longer deadline than `timeout_s`."""
    timeout_s = upload_timeout_s(data, timeout_s)
    if is_small(data):
        messages = upload_messages(model, data, is_archive, progress)
        return (yield Unary("models", "UploadModel", messages, timeout_s)).model_version  # type: ignore[no-any-return]
    start = upload_start(model, data, is_archive)
    created = yield Unary("models", "CreateModelUpload", mpb.CreateModelUploadRequest(start=start))
    start.upload_id = created.upload.upload_id
    reported, attempt, offset, rate_limited = UploadProgress(progress), 1, 0, False
    while True:
        try:
            if attempt > 1 and not rate_limited:  # where the gateway stands
                stands = yield Unary("models", "GetModelUpload",
                                     mpb.GetModelUploadRequest(upload_id=start.upload_id))
                offset = stands.upload.received_bytes
            messages = resumed_messages(start, data, offset, reported)
            return (yield Unary("models", "UploadModel", messages, timeout_s)).model_version  # type: ignore[no-any-return]
        except MaasError as err:
            if not is_resumable(err, attempt):
                raise
            rate_limited = is_rate_limited(err)
            delay_s = resume_delay_s(err, attempt)
            log.warning("upload %s stopped (%s); resuming", start.upload_id, err)
        yield Sleep(delay_s)
        attempt += 1


def get_model(name: str) -> Operation[mpb.Model]:
    reply = yield Unary("models", "GetModel", mpb.GetModelRequest(name=name))
    return reply.model  # type: ignore[no-any-return]


def list_models() -> Operation[list[mpb.Model]]:
    """Every page of ListModels."""
    found: list[mpb.Model] = []
    token = ""
    while True:
        page = yield Unary("models", "ListModels", mpb.ListModelsRequest(page_token=token))
        found += page.models
        token = page.next_page_token
        if not token:
            return found


def download_model(name: str, out_dir: Path | str, version: str | int,
                   progress: Progress | None) -> Operation[mpb.ModelVersion]:
    """The version's file and manifest.json written into `out_dir` as they arrive (the
    stream has no deadline: a model may be large)."""
    writer = DownloadWriter(Path(out_dir), progress)
    request = mpb.DownloadModelRequest(name=name, version=str(version))
    try:
        yield Consume(Stream("models", "DownloadModel", request, NO_DEADLINE), writer.write)
    finally:
        writer.close()
    return writer.finish()


def set_model_alias(name: str, alias: str, version: str | int) -> Operation[mpb.Model]:
    request = mpb.SetModelAliasRequest(name=name, alias=alias, version=str(version))
    return (yield Unary("models", "SetModelAlias", request)).model  # type: ignore[no-any-return]


def delete_model_alias(name: str, alias: str) -> Operation[mpb.Model]:
    request = mpb.DeleteModelAliasRequest(name=name, alias=alias)
    return (yield Unary("models", "DeleteModelAlias", request)).model  # type: ignore[no-any-return]


def delete_model_version(name: str, version: str | int) -> Operation[mpb.Model]:
    request = mpb.DeleteModelVersionRequest(name=name, version=str(version))
    return (yield Unary("models", "DeleteModelVersion", request)).model  # type: ignore[no-any-return]


def dead_letters(model: str) -> Operation[list[qpb.DeadLetter]]:
    reply = yield Unary("queue", "ListDeadLetters", qpb.ListDeadLettersRequest(model=model))
    return list(reply.dead_letters)


def workers() -> Operation[list[qpb.Worker]]:
    reply = yield Unary("queue", "ListWorkers", qpb.ListWorkersRequest())
    return list(reply.workers)


def queue_stats(model: str | None) -> Operation[list[qpb.ModelQueueStats]]:
    """The queue statistics of one model, or every page of them (every model the key sees)."""
    found: list[qpb.ModelQueueStats] = []
    token = ""
    while True:
        page = yield Unary("queue", "GetQueueStats",
                           qpb.GetQueueStatsRequest(model=model or "", page_token=token))
        found += page.models
        token = page.next_page_token
        if not token:
            return found


def redrive(model: str, job_ids: Sequence[str]) -> Operation[list[str]]:
    request = qpb.RedriveDeadLettersRequest(model=model, job_ids=list(job_ids))
    return list((yield Unary("queue", "RedriveDeadLetters", request)).job_ids)


def create_key(tenant: str, scopes: Sequence[str],
               description: str) -> Operation[kpb.CreateKeyResponse]:
    request = kpb.CreateKeyRequest(tenant=tenant, scopes=scopes, description=description)
    return (yield Unary("keys", "CreateKey", request))  # type: ignore[no-any-return]


def list_keys(tenant: str) -> Operation[list[kpb.ApiKey]]:
    return list((yield Unary("keys", "ListKeys", kpb.ListKeysRequest(tenant=tenant))).keys)


def revoke_key(key_id: str) -> Operation[kpb.ApiKey]:
    return (yield Unary("keys", "RevokeKey", kpb.RevokeKeyRequest(key_id=key_id))).key  # type: ignore[no-any-return]
