"""The maas SDK: `Client` (blocking) and `AsyncClient` (asyncio) over one gRPC channel.

    with maas.Client("127.0.0.1:50051", api_key=KEY) as c:   # key: MAAS_API_KEY
        out = c.infer("cnn", {"input": x})          # {"output": ndarray}

Inference speaks KServe v2 with raw tensor contents; errors come back as the same
`maas.errors` classes the server raised, matched by their ErrorInfo reason.

This module holds `Client`: it sends the calls of each method, which are written once for
both clients in maas/operations.py and maas/training_client.py (see maas/calls.py).
`AsyncClient` lives in maas/async_client.py, the request and response messages in
maas/messages.py and the channel in maas/rpc.py (the names callers import from here are
re-exported).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from maas import operations as ops
from maas import training_client as training
from maas.async_client import AsyncClient as AsyncClient  # re-exported for callers
from maas.calls import NO_DEADLINE, Consume, Operation, ServiceStubs, Sleep, Stream, Unary
from maas.errors import MaasError
from maas.explanation import Explanation
from maas.generation import GenerationChunk
from maas.generation import generate as generate_call
from maas.inference import grpc_service_pb2 as v2
from maas.messages import TensorSpecs as TensorSpecs  # re-exported for callers
from maas.messages import archive_request as archive_request
from maas.messages import infer_outputs as infer_outputs
from maas.messages import infer_request as infer_request
from maas.messages import job_outputs as job_outputs
from maas.messages import register_request as register_request
from maas.messages import submit_request as submit_request
from maas.model_files import Progress
from maas.rpc import DEFAULT_MAX_MESSAGE_BYTES, Pem, channel_setup, default_target, open_channel
from maas.rpc import channel_options as channel_options  # re-exported for callers
from maas.rpc import from_rpc_error as from_rpc_error
from maas.training_client import TrainingJobHandle
from maas.v1 import dataset_service_pb2 as dpb
from maas.v1 import inference_service_pb2 as ipb
from maas.v1 import key_service_pb2 as kpb
from maas.v1 import model_service_pb2 as mpb
from maas.v1 import training_service_pb2 as tpb
from maas.v1.queue_service_pb2 import DeadLetter, ModelQueueStats, Worker

T = TypeVar("T")


class Client(ServiceStubs):
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
        super().__init__(self._channel)

    # How this client sends: blocking calls. Everything else is in the operations.

    def _run(self, operation: Operation[T]) -> T:
        """Runs an operation: each action it yields is done, its reply (or the maas error
        it failed with) sent back in, until the operation returns."""
        reply: Any = None
        error: MaasError | None = None
        while True:
            try:
                action = operation.send(reply) if error is None else operation.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply, error = None, None
            try:
                reply = self._do(action)
            except MaasError as err:
                error = err

    def _do(self, action: Unary | Consume | Sleep) -> Any:
        if isinstance(action, Sleep):
            time.sleep(action.seconds)
        elif isinstance(action, Consume):
            for reply in self._stream(action.stream):
                action.sink(reply)
        else:
            return self._call(self._rpc(action), action.request, action.timeout_s)
        return None

    def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return method(request, timeout=self._deadline_s(timeout_s))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def _stream(self, call: Stream) -> Iterator[Any]:
        try:
            for reply in self._rpc(call)(call.request, timeout=self._deadline_s(call.timeout_s)):
                yield call.decode(reply)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def _deadline_s(self, timeout_s: float | None) -> float | None:
        return None if timeout_s == NO_DEADLINE else timeout_s or self.timeout_s

    # The methods: the same names and parameters as AsyncClient's (a test checks it).

    def infer(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
              outputs: Sequence[str] = (), priority: int = 0,
              timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """Runs the model on named inputs (ndarray or torch tensors); returns named outputs."""
        return self._run(ops.infer(model, inputs, version, outputs, priority, timeout_s))

    def model_metadata(self, model: str, version: str = "") -> v2.ModelMetadataResponse:
        return self._run(ops.model_metadata(model, version))

    def model_config(self, model: str, version: str = "") -> v2.ModelConfig:
        """Triton's configuration of a model: tensors, max_batch_size, and whether it is
        decoupled (a generative model, served token by token)."""
        return self._run(ops.model_config(model, version))

    def submit(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
               outputs: Sequence[str] = (), priority: int = 0, request_id: str = "",
               deadline_s: float | None = None) -> ipb.InferenceJob:
        """Queues an inference and returns at once; fetch it with `wait_job`/`get_job`.
        The same request_id returns the same job (24 h)."""
        return self._run(ops.submit(model, inputs, version, outputs, priority, request_id,
                                    deadline_s))

    def get_job(self, job_id: str) -> ipb.InferenceJob:
        return self._run(ops.get_job(job_id))

    def wait_job(self, job_id: str, timeout_s: float = 30.0) -> ipb.InferenceJob:
        """The job once ended, or as it is after timeout_s."""
        return self._run(ops.wait_job(job_id, timeout_s))

    def cancel_job(self, job_id: str) -> ipb.InferenceJob:
        return self._run(ops.cancel_job(job_id))

    def explain(self, model: str, inputs: Mapping[str, Any], *, version: str = "",
                method: str = "ig", target: int | None = None,
                baselines: Mapping[str, Any] | None = None, n_steps: int = 0,
                timeout_s: float | None = None) -> Explanation:
        """Attributions of `target` (default: each row's predicted class) to the inputs:
        method "ig" (Integrated Gradients, baselines default to zeros) or "saliency"."""
        return self._run(ops.explain(model, inputs, version, method, target, baselines,
                                     n_steps, timeout_s))

    def generate(self, model: str, prompt: str, *, max_tokens: int = 16,
                 temperature: float = 0.0, top_k: int = 0, top_p: float | None = None,
                 seed: int | None = None, stop: Sequence[str] = (), version: str = "",
                 priority: int = 0, request_id: str = "",
                 timeout_s: float | None = None) -> Iterator[GenerationChunk]:
        """Continues `prompt` with a generative model, yielding each token as it is made
        (`.text`, `.token_ids`); the last chunk has `.finish_reason` ("length", "stop",
        "eos", "deadline"). temperature 0 is greedy; a seed makes sampling reproducible;
        leaving the loop early cancels the generation. docs/generation.md."""
        yield from self._stream(generate_call(
            model, prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
            top_p=top_p, seed=seed, stop=stop, version=version, priority=priority,
            request_id=request_id, timeout_s=timeout_s))

    def is_ready(self) -> bool:
        return self._run(ops.is_ready())

    def register_model(self, name: str, architecture: str, weights: bytes | Path | str,
                       config: Mapping[str, Any] | str | None = None, *,
                       shared: bool = False, progress: Progress | None = None
                       ) -> mpb.ModelVersion:
        """The next version of the caller's model (shared=True: of the shared catalog, for
        admins), servable at once. Weights of any size are streamed (UploadModel) from
        bytes or a file, which is never read whole; `progress` is called with each chunk's
        size."""
        return self._run(ops.register_model(name, architecture, weights, config, shared,
                                            progress, self.timeout_s))

    def get_model(self, name: str) -> mpb.Model:
        return self._run(ops.get_model(name))

    def upload_model(self, name: str, archive: bytes | Path | str, inputs: TensorSpecs,
                     outputs: TensorSpecs, *, shared: bool = False,
                     progress: Progress | None = None) -> mpb.ModelVersion:
        """A TorchScript (torch.jit.save) or torch.export (torch.export.save) archive as the
        next version of a model. inputs/outputs: {name: (datatype, shape)}, -1 = any size,
        e.g. {"input": ("FP32", [-1, 4])}."""
        return self._run(ops.upload_model(name, archive, inputs, outputs, shared, progress,
                                          self.timeout_s))

    def download_model(self, name: str, out_dir: Path | str, *, version: str | int = "",
                       progress: Progress | None = None) -> mpb.ModelVersion:
        """Writes a version's weights or archive and manifest.json into `out_dir`: files
        that load with safetensors / torch.jit.load / torch.export.load, without maas."""
        return self._run(ops.download_model(name, out_dir, version, progress))

    def set_model_alias(self, name: str, alias: str, version: str | int) -> mpb.Model:
        """Points `alias` (e.g. "production") at a version, atomically; returns the model."""
        return self._run(ops.set_model_alias(name, alias, version))

    def delete_model_alias(self, name: str, alias: str) -> mpb.Model:
        return self._run(ops.delete_model_alias(name, alias))

    def delete_model_version(self, name: str, version: str | int) -> mpb.Model:
        """Refused (maas.errors.ModelVersionInUse) while an alias points to the version."""
        return self._run(ops.delete_model_version(name, version))

    def list_models(self) -> list[mpb.Model]:
        return self._run(ops.list_models())

    def dead_letters(self, model: str) -> list[DeadLetter]:
        """A model's dead-lettered jobs (admin)."""
        return self._run(ops.dead_letters(model))

    def workers(self) -> list[Worker]:
        """The live workers: what each serves, has loaded, and its models' memory (admin)."""
        return self._run(ops.workers())

    def queue_stats(self, model: str | None = None) -> list[ModelQueueStats]:
        """Per model the key sees (or just `model`): jobs waiting and leased by priority, the
        oldest one's age, `delivered_total` (jobs/s from two reads), dead letters, workers."""
        return self._run(ops.queue_stats(model))

    def redrive(self, model: str, job_ids: Sequence[str] = ()) -> list[str]:
        """Queues dead-lettered jobs again; all of the model's when job_ids is empty (admin)."""
        return self._run(ops.redrive(model, job_ids))

    def train(self, spec: Mapping[str, Any] | tpb.TrainingSpec,
              request_id: str = "") -> TrainingJobHandle:
        """Queues a training job and returns at once; `.wait(progress=True)` follows it."""
        return TrainingJobHandle(self._run(training.train(spec, request_id)), self)

    def training_job(self, job_id: str) -> TrainingJobHandle:
        return TrainingJobHandle(self._run(training.get_training_job(job_id)), self)

    def list_training_jobs(self, page_size: int = 50) -> list[tpb.TrainingJob]:
        return self._run(training.list_training_jobs(page_size))

    def upload_dataset(self, path: str | Path, name: str, *, file_format: str | None = None,
                       progress: bool = False, timeout_s: float = 3600) -> dpb.Dataset:
        """Streams an .npz or .safetensors file (features, labels) in chunks, checksummed."""
        return self._run(training.upload_dataset(path, name, file_format, progress, timeout_s))

    def get_dataset(self, name: str) -> dpb.Dataset:
        return self._run(training.get_dataset(name))

    def list_datasets(self) -> list[dpb.Dataset]:
        return self._run(training.list_datasets())

    def delete_dataset(self, name: str) -> None:
        self._run(training.delete_dataset(name))

    def create_key(self, tenant: str, scopes: Sequence[str],
                   description: str = "") -> kpb.CreateKeyResponse:
        """A new API key (`.api_key`, shown only here) and its record (`.key`). Admin only."""
        return self._run(ops.create_key(tenant, scopes, description))

    def list_keys(self, tenant: str = "") -> list[kpb.ApiKey]:
        return self._run(ops.list_keys(tenant))

    def revoke_key(self, key_id: str) -> kpb.ApiKey:
        return self._run(ops.revoke_key(key_id))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
