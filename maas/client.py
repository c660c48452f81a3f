"""The maas SDK: `Client` (blocking) and `AsyncClient` (asyncio) over one gRPC channel.

    with maas.Client("127.0.0.1:50051", api_key=KEY) as c:   # key: MAAS_API_KEY
        out = c.infer("cnn", {"input": x})          # {"output": ndarray}

Inference speaks KServe v2 with raw tensor contents; errors come back as the same
`maas.errors` classes the server raised, matched by their ErrorInfo reason.

This module holds `Client`; `AsyncClient` lives in maas/async_client.py, the request and
response messages in maas/messages.py and the channel in maas/rpc.py (the names callers
import from here are re-exported).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from maas.async_client import AsyncClient as AsyncClient  # re-exported for callers
from maas.errors import MaasError
from maas.explanation import Explanation, explain_request, explanation_of
from maas.inference import grpc_service_pb2 as v2
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from maas.messages import TensorSpecs as TensorSpecs  # re-exported for callers
from maas.messages import archive_request as archive_request
from maas.messages import infer_outputs as infer_outputs
from maas.messages import infer_request as infer_request
from maas.messages import job_outputs as job_outputs
from maas.messages import register_request as register_request
from maas.messages import submit_request as submit_request
from maas.model_files import (
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
    write_download,
)
from maas.rpc import DEFAULT_MAX_MESSAGE_BYTES, Pem, channel_setup, default_target, open_channel
from maas.rpc import channel_options as channel_options  # re-exported for callers
from maas.rpc import from_rpc_error as from_rpc_error
from maas.training_client import TrainingJobHandle, training_spec, upload_requests
from maas.v1 import dataset_service_pb2 as dpb
from maas.v1 import inference_service_pb2 as ipb
from maas.v1 import key_service_pb2 as kpb
from maas.v1 import model_service_pb2 as mpb
from maas.v1 import training_service_pb2 as tpb
from maas.v1.dataset_service_pb2_grpc import DatasetServiceStub
from maas.v1.inference_service_pb2_grpc import InferenceServiceStub
from maas.v1.key_service_pb2_grpc import KeyServiceStub
from maas.v1.model_service_pb2_grpc import ModelServiceStub
from maas.v1.queue_service_pb2 import (
    DeadLetter,
    ListDeadLettersRequest,
    ListWorkersRequest,
    RedriveDeadLettersRequest,
    Worker,
)
from maas.v1.queue_service_pb2_grpc import QueueServiceStub
from maas.v1.training_service_pb2_grpc import TrainingServiceStub

log = logging.getLogger(__name__)


class Client:
    """Blocking client. Every call has a deadline (`timeout_s`, default 30 s).

    `api_key` (default: MAAS_API_KEY) goes with every call as `authorization: Bearer`. TLS is
    on with `tls=True` (system roots) or any of `root_certificates` (the server's CA),
    `certificate_chain` + `private_key` (a client certificate, for mutual TLS): PEM bytes or
    file paths.
    """

    def __init__(self, target: str | None = None, *, api_key: str | None = None,
                 timeout_s: float = 30.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 tls: bool | None = None, root_certificates: Pem | None = None,
                 certificate_chain: Pem | None = None, private_key: Pem | None = None) -> None:
        self.target, self.timeout_s = target or default_target(), timeout_s
        self._channel = open_channel(self.target, *channel_setup(
            api_key, max_message_bytes, tls, root_certificates, certificate_chain, private_key))
        self._v2 = GRPCInferenceServiceStub(self._channel)
        self._models = ModelServiceStub(self._channel)
        self._training = TrainingServiceStub(self._channel)
        self._datasets = DatasetServiceStub(self._channel)
        self._jobs = InferenceServiceStub(self._channel)
        self._queue = QueueServiceStub(self._channel)
        self._keys = KeyServiceStub(self._channel)

    def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return method(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def infer(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
              outputs: Sequence[str] = (), priority: int = 0,
              timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """Runs the model on named inputs (ndarray or torch tensors); returns named outputs."""
        request = infer_request(model, inputs, version, outputs, priority)
        return infer_outputs(self._call(self._v2.ModelInfer, request, timeout_s))

    def model_metadata(self, model: str, version: str = "") -> v2.ModelMetadataResponse:
        request = v2.ModelMetadataRequest(name=model, version=version)
        return self._call(self._v2.ModelMetadata, request, None)  # type: ignore[no-any-return]

    def submit(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
               outputs: Sequence[str] = (), priority: int = 0, request_id: str = "",
               deadline_s: float | None = None) -> ipb.InferenceJob:
        """Queues an inference and returns at once; fetch it with `wait_job`/`get_job`.
        The same request_id returns the same job (24 h)."""
        request = submit_request(model, inputs, version, outputs, priority, request_id,
                                 deadline_s)
        return self._call(self._jobs.SubmitInference, request, None).job  # type: ignore[no-any-return]

    def get_job(self, job_id: str) -> ipb.InferenceJob:
        return self._call(self._jobs.GetJob, ipb.GetJobRequest(job_id=job_id), None).job  # type: ignore[no-any-return]

    def wait_job(self, job_id: str, timeout_s: float = 30.0) -> ipb.InferenceJob:
        """The job once ended, or as it is after timeout_s."""
        request = ipb.WaitJobRequest(job_id=job_id, timeout_ms=int(timeout_s * 1000))
        return self._call(self._jobs.WaitJob, request, timeout_s + 5).job  # type: ignore[no-any-return]

    def cancel_job(self, job_id: str) -> ipb.InferenceJob:
        return self._call(self._jobs.CancelJob, ipb.CancelJobRequest(job_id=job_id), None).job  # type: ignore[no-any-return]

    def explain(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
                method: str = "ig", target: int | None = None,
                baselines: Mapping[str, Any] | None = None, n_steps: int = 0,
                timeout_s: float | None = None) -> Explanation:
        """Attributions of `target` (default: each row's predicted class) to the inputs:
        method "ig" (Integrated Gradients, baselines default to zeros) or "saliency"."""
        request = explain_request(model, inputs, version, method, target, baselines, n_steps)
        return explanation_of(self._call(self._jobs.Explain, request, timeout_s))

    def is_ready(self) -> bool:
        return bool(self._call(self._v2.ServerReady, v2.ServerReadyRequest(), None).ready)

    def register_model(self, name: str, architecture: str, weights: bytes | Path | str,
                       config: Mapping[str, Any] | str | None = None, *,
                       shared: bool = False, progress: Progress | None = None
                       ) -> mpb.ModelVersion:
        """The next version of the caller's model (shared=True: of the shared catalog, for
        admins), servable at once. Weights of any size are streamed (UploadModel) from
        bytes or a file, which is never read whole; `progress` is called with each chunk's
        size."""
        request = register_request(name, architecture, b"", config, shared)
        return self._upload(request, upload_source(weights), False, progress)

    def get_model(self, name: str) -> mpb.Model:
        return self._call(self._models.GetModel, mpb.GetModelRequest(name=name), None).model  # type: ignore[no-any-return]

    def upload_model(self, name: str, archive: bytes | Path | str, inputs: TensorSpecs,
                     outputs: TensorSpecs, *, shared: bool = False,
                     progress: Progress | None = None) -> mpb.ModelVersion:
        """A TorchScript (torch.jit.save) or torch.export (torch.export.save) archive as the
        next version of a model. inputs/outputs: {name: (datatype, shape)}, -1 = any size,
        e.g. {"input": ("FP32", [-1, 4])}."""
        request = archive_request(name, b"", inputs, outputs, shared)
        return self._upload(request, upload_source(archive), True, progress)

    def _upload(self, model: mpb.RegisterModelRequest, data: bytes | Path, is_archive: bool,
                progress: Progress | None) -> mpb.ModelVersion:
        """A resumable upload: a broken stream continues where the gateway stands (a small
        one is one UploadModel call)."""
        timeout_s = upload_timeout_s(data, self.timeout_s)
        if is_small(data):
            messages = upload_messages(model, data, is_archive, progress)
            return self._call(self._models.UploadModel, messages, timeout_s).model_version  # type: ignore[no-any-return]
        start = upload_start(model, data, is_archive)
        created = self._call(self._models.CreateModelUpload,
                             mpb.CreateModelUploadRequest(start=start), None)
        start.upload_id = created.upload.upload_id  # (a large model gets a longer deadline)
        reported, attempt, offset = UploadProgress(progress), 1, 0
        rate_limited = False
        while True:
            try:
                if attempt > 1 and not rate_limited:  # where the gateway stands
                    offset = self._call(self._models.GetModelUpload, mpb.GetModelUploadRequest(
                        upload_id=start.upload_id), None).upload.received_bytes
                messages = resumed_messages(start, data, offset, reported)
                return self._call(self._models.UploadModel, messages, timeout_s).model_version  # type: ignore[no-any-return]
            except MaasError as err:
                if not is_resumable(err, attempt):
                    raise
                rate_limited = is_rate_limited(err)
                log.warning("upload %s stopped (%s); resuming", start.upload_id, err)
                time.sleep(resume_delay_s(err, attempt))
                attempt += 1

    def download_model(self, name: str, out_dir: Path | str, *, version: str | int = "",
                       progress: Progress | None = None) -> mpb.ModelVersion:
        """Writes a version's weights or archive and manifest.json into `out_dir`: files
        that load with safetensors / torch.jit.load / torch.export.load, without maas."""
        request = mpb.DownloadModelRequest(name=name, version=str(version))
        try:
            responses = self._models.DownloadModel(request, timeout=None)
            return write_download(responses, Path(out_dir), progress)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def set_model_alias(self, name: str, alias: str, version: str | int) -> mpb.Model:
        """Points `alias` (e.g. "production") at a version, atomically; returns the model."""
        request = mpb.SetModelAliasRequest(name=name, alias=alias, version=str(version))
        return self._call(self._models.SetModelAlias, request, None).model  # type: ignore[no-any-return]

    def delete_model_alias(self, name: str, alias: str) -> mpb.Model:
        request = mpb.DeleteModelAliasRequest(name=name, alias=alias)
        return self._call(self._models.DeleteModelAlias, request, None).model  # type: ignore[no-any-return]

    def delete_model_version(self, name: str, version: str | int) -> mpb.Model:
        """Refused (maas.errors.ModelVersionInUse) while an alias points to the version."""
        request = mpb.DeleteModelVersionRequest(name=name, version=str(version))
        return self._call(self._models.DeleteModelVersion, request, None).model  # type: ignore[no-any-return]

    def list_models(self) -> list[mpb.Model]:
        found: list[mpb.Model] = []
        token = ""
        while True:
            page = self._call(self._models.ListModels, mpb.ListModelsRequest(page_token=token),
                              None)
            found += page.models
            token = page.next_page_token
            if not token:
                return found

    def dead_letters(self, model: str) -> list[DeadLetter]:
        """A model's dead-lettered jobs (admin)."""
        request = ListDeadLettersRequest(model=model)
        return list(self._call(self._queue.ListDeadLetters, request, None).dead_letters)

    def workers(self) -> list[Worker]:
        """The live workers: what each serves, has loaded, and its models' memory (admin)."""
        return list(self._call(self._queue.ListWorkers, ListWorkersRequest(), None).workers)

    def redrive(self, model: str, job_ids: Sequence[str] = ()) -> list[str]:
        """Queues dead-lettered jobs again; all of the model's when job_ids is empty (admin)."""
        request = RedriveDeadLettersRequest(model=model, job_ids=list(job_ids))
        return list(self._call(self._queue.RedriveDeadLetters, request, None).job_ids)

    def train(self, spec: Mapping[str, Any] | tpb.TrainingSpec,
              request_id: str = "") -> TrainingJobHandle:
        """Queues a training job and returns at once; `.wait(progress=True)` follows it."""
        request = tpb.CreateTrainingJobRequest(spec=training_spec(spec), request_id=request_id)
        job = self._call(self._training.CreateTrainingJob, request, None).job
        return TrainingJobHandle(job, self._training, self._call)

    def training_job(self, job_id: str) -> TrainingJobHandle:
        job = self._call(self._training.GetTrainingJob, tpb.GetTrainingJobRequest(job_id=job_id),
                         None).job
        return TrainingJobHandle(job, self._training, self._call)

    def list_training_jobs(self, page_size: int = 50) -> list[tpb.TrainingJob]:
        request = tpb.ListTrainingJobsRequest(page_size=page_size)
        return list(self._call(self._training.ListTrainingJobs, request, None).jobs)

    def upload_dataset(self, path: str | Path, name: str, *, file_format: str | None = None,
                       progress: bool = False, timeout_s: float = 3600) -> dpb.Dataset:
        """Streams an .npz or .safetensors file (features, labels) in chunks, checksummed."""
        requests = upload_requests(Path(path), name, file_format, progress)
        return self._call(self._datasets.UploadDataset, requests, timeout_s).dataset  # type: ignore[no-any-return]

    def get_dataset(self, name: str) -> dpb.Dataset:
        return self._call(self._datasets.GetDataset, dpb.GetDatasetRequest(name=name), None).dataset  # type: ignore[no-any-return]

    def list_datasets(self) -> list[dpb.Dataset]:
        return list(self._call(self._datasets.ListDatasets, dpb.ListDatasetsRequest(),
                               None).datasets)

    def delete_dataset(self, name: str) -> None:
        self._call(self._datasets.DeleteDataset, dpb.DeleteDatasetRequest(name=name), None)

    def create_key(self, tenant: str, scopes: Sequence[str],
                   description: str = "") -> kpb.CreateKeyResponse:
        """A new API key (`.api_key`, shown only here) and its record (`.key`). Admin only."""
        request = kpb.CreateKeyRequest(tenant=tenant, scopes=scopes, description=description)
        return self._call(self._keys.CreateKey, request, None)  # type: ignore[no-any-return]

    def list_keys(self, tenant: str = "") -> list[kpb.ApiKey]:
        return list(self._call(self._keys.ListKeys, kpb.ListKeysRequest(tenant=tenant),
                               None).keys)

    def revoke_key(self, key_id: str) -> kpb.ApiKey:
        return self._call(self._keys.RevokeKey, kpb.RevokeKeyRequest(key_id=key_id), None).key  # type: ignore[no-any-return]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
