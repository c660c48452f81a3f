"""The asyncio SDK client: `AsyncClient`, every method of the blocking `maas.Client`, awaited,
over one grpc.aio channel. Both send the same operations (maas/operations.py and
maas/training_client.py, see maas/calls.py); only how they send differs.

    async with maas.AsyncClient("127.0.0.1:50051") as c:
        out = await c.infer("cnn", {"input": x})    # {"output": ndarray}
        job = await c.train(spec)                   # an AsyncTrainingJobHandle
        async for event in job.watch():
            ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from maas import operations as ops
from maas import training_client as training
from maas.calls import NO_DEADLINE, Consume, Operation, ServiceStubs, Sleep, Stream, Unary
from maas.errors import MaasError
from maas.explanation import Explanation
from maas.generation import GenerationChunk
from maas.generation import generate as generate_call
from maas.inference import grpc_service_pb2 as v2
from maas.messages import TensorSpecs
from maas.model_files import Progress
from maas.rpc import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Pem,
    channel_setup,
    default_target,
    from_rpc_error,
    open_aio_channel,
)
from maas.training_client import AsyncTrainingJobHandle
from maas.v1 import dataset_service_pb2 as dpb
from maas.v1 import inference_service_pb2 as ipb
from maas.v1 import key_service_pb2 as kpb
from maas.v1 import model_service_pb2 as mpb
from maas.v1 import training_service_pb2 as tpb
from maas.v1.queue_service_pb2 import DeadLetter, ModelQueueStats, Worker

T = TypeVar("T")


class AsyncClient(ServiceStubs):
    """asyncio client with every method of `Client`, awaited; a training job's handle is an
    `AsyncTrainingJobHandle` (its `watch` an async iterator)."""

    def __init__(self, target: str | None = None, *, api_key: str | None = None,
                 timeout_s: float = 30.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 tls: bool | None = None, root_certificates: Pem | None = None,
                 certificate_chain: Pem | None = None, private_key: Pem | None = None) -> None:
        self.target, self.timeout_s = target or default_target(), timeout_s
        self._channel = open_aio_channel(self.target, *channel_setup(
            api_key, max_message_bytes, tls, root_certificates, certificate_chain, private_key))
        super().__init__(self._channel)

    # How this client sends: awaited calls. Everything else is in the operations.

    async def _run(self, operation: Operation[T]) -> T:
        """Runs an operation as Client._run does, awaiting each action."""
        reply: Any = None
        error: MaasError | None = None
        while True:
            try:
                action = operation.send(reply) if error is None else operation.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply, error = None, None
            try:
                reply = await self._do(action)
            except MaasError as err:
                error = err

    async def _do(self, action: Unary | Consume | Sleep) -> Any:
        if isinstance(action, Sleep):
            await asyncio.sleep(action.seconds)
        elif isinstance(action, Consume):
            async for reply in self._stream(action.stream):
                action.sink(reply)
        else:
            return await self._call(self._rpc(action), action.request, action.timeout_s)
        return None

    async def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return await method(request, timeout=self._deadline_s(timeout_s))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def _stream(self, call: Stream) -> AsyncIterator[Any]:
        try:
            async for reply in self._rpc(call)(call.request,
                                               timeout=self._deadline_s(call.timeout_s)):
                yield call.decode(reply)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def _deadline_s(self, timeout_s: float | None) -> float | None:
        return None if timeout_s == NO_DEADLINE else timeout_s or self.timeout_s

    # The methods: Client's, awaited (a test checks that the names and parameters match);
    # each is documented on Client.

    async def infer(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
                    outputs: Sequence[str] = (), priority: int = 0,
                    timeout_s: float | None = None) -> dict[str, np.ndarray]:
        return await self._run(ops.infer(model, inputs, version, outputs, priority, timeout_s))

    async def model_metadata(self, model: str, version: str = "") -> v2.ModelMetadataResponse:
        return await self._run(ops.model_metadata(model, version))

    async def model_config(self, model: str, version: str = "") -> v2.ModelConfig:
        """Triton's configuration of a model (see Client.model_config)."""
        return await self._run(ops.model_config(model, version))

    async def submit(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
                     outputs: Sequence[str] = (), priority: int = 0, request_id: str = "",
                     deadline_s: float | None = None) -> ipb.InferenceJob:
        return await self._run(ops.submit(model, inputs, version, outputs, priority, request_id,
                                          deadline_s))

    async def get_job(self, job_id: str) -> ipb.InferenceJob:
        return await self._run(ops.get_job(job_id))

    async def wait_job(self, job_id: str, timeout_s: float = 30.0) -> ipb.InferenceJob:
        return await self._run(ops.wait_job(job_id, timeout_s))

    async def cancel_job(self, job_id: str) -> ipb.InferenceJob:
        return await self._run(ops.cancel_job(job_id))

    async def explain(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
                      method: str = "ig", target: int | None = None,
                      baselines: Mapping[str, Any] | None = None, n_steps: int = 0,
                      timeout_s: float | None = None) -> Explanation:
        return await self._run(ops.explain(model, inputs, version, method, target, baselines,
                                           n_steps, timeout_s))

    async def generate(self, model: str, prompt: str, *, max_tokens: int = 16,
                       temperature: float = 0.0, top_k: int = 0, top_p: float | None = None,
                       seed: int | None = None, stop: Sequence[str] = (), version: str = "",
                       priority: int = 0, request_id: str = "",
                       timeout_s: float | None = None) -> AsyncIterator[GenerationChunk]:
        async for chunk in self._stream(generate_call(
                model, prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                top_p=top_p, seed=seed, stop=stop, version=version, priority=priority,
                request_id=request_id, timeout_s=timeout_s)):
            yield chunk

    async def is_ready(self) -> bool:
        return await self._run(ops.is_ready())

    async def register_model(self, name: str, architecture: str, weights: bytes | Path | str,
                             config: Mapping[str, Any] | str | None = None, *,
                             shared: bool = False, progress: Progress | None = None
                             ) -> mpb.ModelVersion:
        return await self._run(ops.register_model(name, architecture, weights, config, shared,
                                                  progress, self.timeout_s))

    async def get_model(self, name: str) -> mpb.Model:
        return await self._run(ops.get_model(name))

    async def upload_model(self, name: str, archive: bytes | Path | str, inputs: TensorSpecs,
                           outputs: TensorSpecs, *, shared: bool = False,
                           progress: Progress | None = None) -> mpb.ModelVersion:
        return await self._run(ops.upload_model(name, archive, inputs, outputs, shared, progress,
                                                self.timeout_s))

    async def download_model(self, name: str, out_dir: Path | str, *, version: str | int = "",
                             progress: Progress | None = None) -> mpb.ModelVersion:
        return await self._run(ops.download_model(name, out_dir, version, progress))

    async def set_model_alias(self, name: str, alias: str, version: str | int) -> mpb.Model:
        return await self._run(ops.set_model_alias(name, alias, version))

    async def delete_model_alias(self, name: str, alias: str) -> mpb.Model:
        return await self._run(ops.delete_model_alias(name, alias))

    async def delete_model_version(self, name: str, version: str | int) -> mpb.Model:
        return await self._run(ops.delete_model_version(name, version))

    async def list_models(self) -> list[mpb.Model]:
        return await self._run(ops.list_models())

    async def dead_letters(self, model: str) -> list[DeadLetter]:
        return await self._run(ops.dead_letters(model))

    async def workers(self) -> list[Worker]:
        return await self._run(ops.workers())

    async def queue_stats(self, model: str | None = None) -> list[ModelQueueStats]:
        return await self._run(ops.queue_stats(model))

    async def redrive(self, model: str, job_ids: Sequence[str] = ()) -> list[str]:
        return await self._run(ops.redrive(model, job_ids))

    async def train(self, spec: Mapping[str, Any] | tpb.TrainingSpec,
                    request_id: str = "") -> AsyncTrainingJobHandle:
        return AsyncTrainingJobHandle(await self._run(training.train(spec, request_id)), self)

    async def training_job(self, job_id: str) -> AsyncTrainingJobHandle:
        return AsyncTrainingJobHandle(await self._run(training.get_training_job(job_id)), self)

    async def list_training_jobs(self, page_size: int = 50) -> list[tpb.TrainingJob]:
        return await self._run(training.list_training_jobs(page_size))

    async def upload_dataset(self, path: str | Path, name: str, *, file_format: str | None = None,
                             progress: bool = False, timeout_s: float = 3600) -> dpb.Dataset:
        return await self._run(training.upload_dataset(path, name, file_format, progress,
                                                       timeout_s))

    async def get_dataset(self, name: str) -> dpb.Dataset:
        return await self._run(training.get_dataset(name))

    async def list_datasets(self) -> list[dpb.Dataset]:
        return await self._run(training.list_datasets())

    async def delete_dataset(self, name: str) -> None:
        await self._run(training.delete_dataset(name))

    async def create_key(self, tenant: str, scopes: Sequence[str],
                         description: str = "") -> kpb.CreateKeyResponse:
        return await self._run(ops.create_key(tenant, scopes, description))

    async def list_keys(self, tenant: str = "") -> list[kpb.ApiKey]:
        return await self._run(ops.list_keys(tenant))

    async def revoke_key(self, key_id: str) -> kpb.ApiKey:
        return await self._run(ops.revoke_key(key_id))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
