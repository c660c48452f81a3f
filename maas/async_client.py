"""The asyncio SDK client: `AsyncClient`, the same calls as the blocking `maas.Client` for
inference, jobs, explanations and models, awaited, over one grpc.aio channel.

    async with maas.AsyncClient("127.0.0.1:50051") as c:
        out = await c.infer("cnn", {"input": x})    # {"output": ndarray}
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from maas.errors import MaasError
from maas.explanation import Explanation, explain_request, explanation_of
from maas.inference import grpc_service_pb2 as v2
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from maas.messages import infer_outputs, infer_request, register_request, submit_request
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
)
from maas.rpc import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Pem,
    channel_setup,
    default_target,
    from_rpc_error,
    open_aio_channel,
)
from maas.v1 import inference_service_pb2 as ipb
from maas.v1 import model_service_pb2 as mpb
from maas.v1.inference_service_pb2_grpc import InferenceServiceStub
from maas.v1.model_service_pb2_grpc import ModelServiceStub


class AsyncClient:
    """asyncio client with the same methods as `Client`, awaited."""

    def __init__(self, target: str | None = None, *, api_key: str | None = None,
                 timeout_s: float = 30.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 tls: bool | None = None, root_certificates: Pem | None = None,
                 certificate_chain: Pem | None = None, private_key: Pem | None = None) -> None:
        self.target, self.timeout_s = target or default_target(), timeout_s
        self._channel = open_aio_channel(self.target, *channel_setup(
            api_key, max_message_bytes, tls, root_certificates, certificate_chain, private_key))
        self._v2 = GRPCInferenceServiceStub(self._channel)
        self._models = ModelServiceStub(self._channel)
        self._jobs = InferenceServiceStub(self._channel)

    async def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return await method(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def infer(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
                    outputs: Sequence[str] = (), priority: int = 0,
                    timeout_s: float | None = None) -> dict[str, np.ndarray]:
        request = infer_request(model, inputs, version, outputs, priority)
        return infer_outputs(await self._call(self._v2.ModelInfer, request, timeout_s))

    async def model_metadata(self, model: str, version: str = "") -> v2.ModelMetadataResponse:
        request = v2.ModelMetadataRequest(name=model, version=version)
        return await self._call(self._v2.ModelMetadata, request, None)  # type: ignore[no-any-return]

    async def register_model(self, name: str, architecture: str, weights: bytes | Path | str,
                             config: Mapping[str, Any] | str | None = None, *,
                             shared: bool = False, progress: Progress | None = None
                             ) -> mpb.ModelVersion:
        """Streamed and resumed as `Client.register_model`."""
        request = register_request(name, architecture, b"", config, shared)
        return await self._upload(request, upload_source(weights), progress)

    async def _upload(self, model: mpb.RegisterModelRequest, data: bytes | Path,
                      progress: Progress | None) -> mpb.ModelVersion:
        timeout_s = upload_timeout_s(data, self.timeout_s)
        if is_small(data):  # one call, as Client's
            messages = upload_messages(model, data, False, progress)
            return (await self._call(self._models.UploadModel, messages,  # type: ignore[no-any-return]
                                     timeout_s)).model_version
        start = upload_start(model, data, False)
        created = await self._call(self._models.CreateModelUpload,
                                   mpb.CreateModelUploadRequest(start=start), None)
        start.upload_id = created.upload.upload_id
        reported, attempt, offset = UploadProgress(progress), 1, 0
        rate_limited = False
        while True:
            try:
                if attempt > 1 and not rate_limited:  # where the gateway stands
                    offset = (await self._call(
                        self._models.GetModelUpload,
                        mpb.GetModelUploadRequest(upload_id=start.upload_id), None)
                    ).upload.received_bytes
                messages = resumed_messages(start, data, offset, reported)
                return (await self._call(self._models.UploadModel, messages,  # type: ignore[no-any-return]
                                         timeout_s)).model_version
            except MaasError as err:
                if not is_resumable(err, attempt):
                    raise
                rate_limited = is_rate_limited(err)
                await asyncio.sleep(resume_delay_s(err, attempt))
                attempt += 1

    async def get_model(self, name: str) -> mpb.Model:
        request = mpb.GetModelRequest(name=name)
        return (await self._call(self._models.GetModel, request, None)).model  # type: ignore[no-any-return]

    async def set_model_alias(self, name: str, alias: str, version: str | int) -> mpb.Model:
        request = mpb.SetModelAliasRequest(name=name, alias=alias, version=str(version))
        return (await self._call(self._models.SetModelAlias, request, None)).model  # type: ignore[no-any-return]

    async def submit(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
                     outputs: Sequence[str] = (), priority: int = 0, request_id: str = "",
                     deadline_s: float | None = None) -> ipb.InferenceJob:
        request = submit_request(model, inputs, version, outputs, priority, request_id,
                                 deadline_s)
        return (await self._call(self._jobs.SubmitInference, request, None)).job  # type: ignore[no-any-return]

    async def get_job(self, job_id: str) -> ipb.InferenceJob:
        request = ipb.GetJobRequest(job_id=job_id)
        return (await self._call(self._jobs.GetJob, request, None)).job  # type: ignore[no-any-return]

    async def wait_job(self, job_id: str, timeout_s: float = 30.0) -> ipb.InferenceJob:
        request = ipb.WaitJobRequest(job_id=job_id, timeout_ms=int(timeout_s * 1000))
        return (await self._call(self._jobs.WaitJob, request, timeout_s + 5)).job  # type: ignore[no-any-return]

    async def cancel_job(self, job_id: str) -> ipb.InferenceJob:
        request = ipb.CancelJobRequest(job_id=job_id)
        return (await self._call(self._jobs.CancelJob, request, None)).job  # type: ignore[no-any-return]

    async def explain(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
                      method: str = "ig", target: int | None = None,
                      baselines: Mapping[str, Any] | None = None, n_steps: int = 0,
                      timeout_s: float | None = None) -> Explanation:
        request = explain_request(model, inputs, version, method, target, baselines, n_steps)
        return explanation_of(await self._call(self._jobs.Explain, request, timeout_s))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
