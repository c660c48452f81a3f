"""Hypothesis over every field of every maas.v1 RPC against a running cluster: each call ends
with a deliberate status (never INTERNAL or UNKNOWN) within a bounded time, and the gateway
stays up. Requests are built from the messages' descriptors (tests/proto_fuzz.py), so a
field or an RPC added to a proto is fuzzed without a change here."""

from __future__ import annotations

import importlib
import json
import pkgutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save

import maas.v1
from maas.inference import grpc_service_pb2 as v2
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from maas.v1 import dataset_service_pb2 as dpb
from maas.v1 import inference_service_pb2 as ipb
from maas.v1 import key_service_pb2 as kpb
from maas.v1 import model_service_pb2 as mpb
from maas.v1 import queue_service_pb2 as qpb
from maas.v1 import training_service_pb2 as tpb
from maas.v1.dataset_service_pb2_grpc import DatasetServiceStub
from maas.v1.inference_service_pb2_grpc import InferenceServiceStub
from maas.v1.training_service_pb2_grpc import TrainingServiceStub
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.hostile_files import HOSTILE_DATASETS, HOSTILE_WEIGHTS, upload_requests
from tests.proto_fuzz import Hints, MessageStrategies

pytestmark = pytest.mark.timeout(120)

CALL_TIMEOUT_S = 10.0
# A deliberate answer to bad input is any status but these.
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.DATA_LOSS}
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def service_methods() -> dict[str, MethodDescriptor]:
    """Every RPC of every maas/v1/*_service.proto, by `Service.Method`."""
    found: dict[str, MethodDescriptor] = {}
    for info in pkgutil.iter_modules(maas.v1.__path__):
        if info.name.endswith("_service_pb2"):
            module = importlib.import_module(f"maas.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found.update({f"{service.name}.{m.name}": m for m in service.methods})
    return found


METHODS = service_methods()


# --- what the cluster holds, mixed into the requests ---------------------------------------

def mlp_input() -> ipb.Tensor:
    return ipb.Tensor(name="input", datatype="FP32", shape=[1, 64], raw=bytes(256))


def mlp_weights() -> bytes:
    shapes = {"layers.0.weight": (256, 64), "layers.0.bias": (256,),
              "layers.2.weight": (256, 256), "layers.2.bias": (256,),
              "layers.4.weight": (10, 256), "layers.4.bias": (10,)}
    return save({k: np.zeros(s, np.float32) for k, s in shapes.items()})


def valid_spec() -> tpb.TrainingSpec:
    return tpb.TrainingSpec(model_name="fuzz-trained", architecture="mlp", dataset="digits",
                            epochs=1)


def attack_spec() -> tpb.TrainingSpec:
    return tpb.TrainingSpec(model_name="fuzz-trained", architecture="mlp", dataset="digits",
                            config_json=json.dumps({"hidden": [65536] * 100}), lr=1e308)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
CONFIG_KEYS = ("in_features", "hidden", "num_classes", "vocab_size", "embed_dim", "layers",
               "d_model", "heads", "ff", "max_len", "cell")
WIDTHS = st.one_of(st.integers(-1, 70_000), st.sampled_from([65536, 2**31, 10**30]), JSON)
CONFIG_JSON = st.one_of(
    st.fixed_dictionaries({}, optional={
        k: st.one_of(WIDTHS, st.lists(WIDTHS, max_size=20), st.just([65536] * 100))
        for k in CONFIG_KEYS}).map(json.dumps),
    JSON.map(json.dumps),
    st.sampled_from(["[" * 100_000, "1" * 5000, '{"hidden": [' + "1" * 5000 + "]}", "{",
                     "null", '{"num_classes": 1e308}', '{"hidden": [Infinity]}']))


def hints(known: dict[str, list[str]]) -> Hints:
    models = ["mlp", "cnn", "mlp:1", "fuzz-trained"]
    return Hints(
        by_field={
            "model": models, "name": [*models, "input", "tokens", "fuzz-data", "digits"],
            "model_name": models, "init_from": ["mlp", "mlp:1", "cnn:99"],
            "model_version": ["", "1", "2", "0", "-1", "9" * 30, "production"],
            "version": ["1", "2", "latest", "9" * 30], "alias": ["production", "latest"],
            "architecture": ["mlp", "cnn", "rnn", "transformer"],
            "dataset": ["digits", "parity", "majority", "fuzz-data"],
            "datatype": ["FP32", "INT64", "FP16", "BYTES", "BOOL"],
            "format": ["npz", "safetensors"], "scopes": ["infer", "train", "admin"],
            "tenant": ["acme", "fuzz"], "loss": ["cross_entropy"],
            "optimizer": ["sgd", "adam", "adamw"], "keep": ["last", "best"],
            "page_token": ["abc", "1", "-1", "inf", "nan", "(5", "9" * 40, "mlp"],
            "outputs": ["output"], "sha256": ["0" * 64], "key_id": ["0123456789abcdef"],
            "job_id": known["job_ids"], "job_ids": known["job_ids"],
            "weights": [mlp_weights(), *HOSTILE_WEIGHTS.values()],
            "chunk": [data for _, data in HOSTILE_DATASETS.values()],
            "shape": [1, 64, 28], "n_steps": [1, 1000, 1001], "page_size": [1, 2, 1000],
        },
        strategies={"config_json": CONFIG_JSON},
        by_message={"maas.v1.Tensor": [mlp_input()],
                    "maas.v1.TrainingSpec": [valid_spec(), attack_spec()]})


def valid_requests(job_ids: list[str]) -> dict[str, list[Message]]:
    """Requests that succeed (or get past every lookup), by message type: the fuzz replaces
    one or two of their fields at a time."""
    inference, training = job_ids[0], job_ids[1]
    found: list[Message] = [
        ipb.SubmitInferenceRequest(model="mlp", inputs=[mlp_input()], request_id="fuzz"),
        ipb.ExplainRequest(model="mlp", inputs=[mlp_input()], n_steps=4),
        ipb.GetJobRequest(job_id=inference), ipb.WaitJobRequest(job_id=inference),
        ipb.CancelJobRequest(job_id=inference),
        tpb.CreateTrainingJobRequest(spec=valid_spec(), request_id="fuzz"),
        tpb.GetTrainingJobRequest(job_id=training), tpb.CancelTrainingJobRequest(job_id=training),
        tpb.WatchTrainingJobRequest(job_id=training),
        tpb.ListTrainingJobsRequest(page_size=2), dpb.ListDatasetsRequest(page_size=2),
        dpb.GetDatasetRequest(name="fuzz-data"), dpb.DeleteDatasetRequest(name="fuzz-data"),
        mpb.RegisterModelRequest(name="fuzz-model", architecture="mlp", weights=mlp_weights()),
        mpb.GetModelRequest(name="mlp"), mpb.ListModelsRequest(page_size=1),
        mpb.SetModelAliasRequest(name="mlp", alias="production", version="1"),
        mpb.DeleteModelAliasRequest(name="mlp", alias="production"),
        mpb.DeleteModelVersionRequest(name="fuzz-model", version="1"),
        kpb.CreateKeyRequest(tenant="fuzz", scopes=["infer"]), kpb.ListKeysRequest(tenant="fuzz"),
        kpb.RevokeKeyRequest(key_id="0123456789abcdef"),
        qpb.ListDeadLettersRequest(model="mlp"), qpb.RedriveDeadLettersRequest(model="mlp"),
    ]
    by_type: dict[str, list[Message]] = {}
    for request in found:
        by_type.setdefault(request.DESCRIPTOR.full_name, []).append(request)
    return by_type


@st.composite
def uploads(draw: st.DrawFn) -> list[dpb.UploadDatasetRequest]:
    """A well-formed upload of a hostile file (its checksum right), so that the file itself
    is what the gateway validates."""
    name = draw(st.sampled_from(sorted(HOSTILE_DATASETS)))
    file_format, data = HOSTILE_DATASETS[name]
    if draw(st.booleans()):
        file_format = "safetensors" if file_format == "npz" else "npz"
    return upload_requests(f"fuzz-{name.replace('_', '-')}", file_format, data,
                           chunk_bytes=draw(st.sampled_from([7, 1000, 1 << 16])))


# --- the cluster ----------------------------------------------------------------------------

def seed_cluster(target: str) -> dict[str, list[str]]:
    """A finished inference job, a cancelled training job and an uploaded dataset."""
    with grpc.insecure_channel(target) as channel:
        jobs = InferenceServiceStub(channel)
        job = jobs.SubmitInference(ipb.SubmitInferenceRequest(model="mlp", inputs=[mlp_input()]),
                                   timeout=30).job
        jobs.WaitJob(ipb.WaitJobRequest(job_id=job.job_id), timeout=30)
        training = TrainingServiceStub(channel)
        trained = training.CreateTrainingJob(tpb.CreateTrainingJobRequest(spec=valid_spec()),
                                             timeout=30).job
        training.CancelTrainingJob(tpb.CancelTrainingJobRequest(job_id=trained.job_id),
                                   timeout=30)
        DatasetServiceStub(channel).UploadDataset(
            iter(upload_requests("fuzz-data", *HOSTILE_DATASETS["good"])), timeout=30)
    return {"job_ids": [job.job_id, trained.job_id, "mlp:0", "mlp:"]}


@dataclass
class Fuzzed:
    cluster: Cluster
    hints: Hints
    valid: dict[str, list[Message]]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """One worker that serves but never trains (queued training jobs stay queued)."""
    running = start_cluster(Path(tmp_path_factory.mktemp("fuzz-v1")), workers=1,
                            training_slots="0")
    try:
        known = seed_cluster(running.target)
        yield Fuzzed(running, hints(known), valid_requests(known["job_ids"]))
    finally:
        stop_cluster(running)


# --- calling any RPC ------------------------------------------------------------------------

def serialize(message: Message) -> bytes:
    return message.SerializeToString()


def invoke(channel: grpc.Channel, method: MethodDescriptor, request: Any) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response = GetMessageClass(method.output_type)
    args: dict[str, Any] = {"request_serializer": serialize,
                            "response_deserializer": response.FromString}
    if method.client_streaming:
        channel.stream_unary(path, **args)(iter(request), timeout=CALL_TIMEOUT_S)
    elif method.server_streaming:
        for _ in channel.unary_stream(path, **args)(request, timeout=CALL_TIMEOUT_S):
            pass
    else:
        channel.unary_unary(path, **args)(request, timeout=CALL_TIMEOUT_S)


def check_answer(channel: grpc.Channel, method: MethodDescriptor, request: Any) -> None:
    """The call ends in time with a deliberate status whose message fits in trailers."""
    started = time.monotonic()
    try:
        invoke(channel, method, request)
    except grpc.RpcError as err:
        code, details = err.code(), err.details() or ""  # type: ignore[attr-defined]
        where = f"{method.full_name}: {code} {details[:300]!r}"
        assert code not in FORBIDDEN, where
        assert len(details) < 4096, where
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:  # the server's answer, not our timeout
            assert rpc_status.from_call(err) is not None, where  # type: ignore[arg-type]
    assert time.monotonic() - started < CALL_TIMEOUT_S, method.full_name


def requests_for(method: MethodDescriptor, fuzzed: Fuzzed) -> st.SearchStrategy[Any]:
    """Requests built field by field, and valid requests with a field or two fuzzed."""
    strategies = MessageStrategies(fuzzed.hints)
    messages = st.one_of(strategies.of(method.input_type), *(
        strategies.mutants(v) for v in fuzzed.valid.get(method.input_type.full_name, [])))
    if method.client_streaming:
        return st.one_of(st.lists(messages, max_size=4), uploads())
    return messages


@pytest.mark.parametrize("rpc", sorted(METHODS))
def test_fuzzed_rpc(fuzzed: Fuzzed, rpc: str) -> None:
    method = METHODS[rpc]
    with grpc.insecure_channel(fuzzed.cluster.target) as channel:

        @FUZZ
        @given(requests_for(method, fuzzed))
        def run(request: Any) -> None:
            check_answer(channel, method, request)

        run()
        assert GRPCInferenceServiceStub(channel).ServerReady(v2.ServerReadyRequest(),
                                                             timeout=10).ready
    assert fuzzed.cluster.service("gateway").poll() is None, "the gateway died"


def test_every_service_is_fuzzed() -> None:
    services = {name.split(".")[0] for name in METHODS}
    assert services >= {"DatasetService", "InferenceService", "KeyService", "ModelService",
                        "QueueService", "TrainingService", "GenerationService"}
    assert len(METHODS) >= 25
