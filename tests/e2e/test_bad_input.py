"""Bad input end to end: every malformed request gets the right status and field, through
tritonclient and the raw generated stub alike, and no process falls over."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from safetensors.numpy import save
from tritonclient.utils import InferenceServerException

import maas
from maas.client import from_rpc_error, register_request
from maas.inference import grpc_service_pb2 as v2
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from maas.v1 import dataset_service_pb2 as dpb
from maas.v1 import inference_service_pb2 as ipb
from maas.v1 import model_service_pb2 as mpb
from maas.v1 import queue_service_pb2 as qpb
from maas.v1 import training_service_pb2 as tpb
from maas.v1.dataset_service_pb2_grpc import DatasetServiceStub
from maas.v1.inference_service_pb2_grpc import InferenceServiceStub
from maas.v1.model_service_pb2_grpc import ModelServiceStub
from maas.v1.queue_service_pb2_grpc import QueueServiceStub
from maas.v1.training_service_pb2_grpc import TrainingServiceStub
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.hostile_files import HOSTILE_DATASETS, HOSTILE_WEIGHTS, upload_requests

pytestmark = pytest.mark.timeout(120)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
MIB = 1 << 20


# --- requests -------------------------------------------------------------------------------

def mlp_request(shape: tuple[int, ...] = (2, 64), datatype: str = "FP32",
                nbytes: int | None = None, name: str = "input") -> v2.ModelInferRequest:
    """One `mlp` input sent raw; `nbytes` overrides the blob's size."""
    request = v2.ModelInferRequest(model_name="mlp")
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    size = 4 * int(np.prod(shape)) if nbytes is None else nbytes
    request.raw_input_contents.append(bytes(max(size, 0)))
    return request


def typed_request(count: int) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[2, 64])
    tensor.contents.fp32_contents.extend([0.5] * count)
    return request


def blobs_for_two_inputs() -> v2.ModelInferRequest:
    request = mlp_request()
    request.inputs.add(name="input_2", datatype="FP32", shape=[2, 64])
    return request  # two inputs, one blob


def contents_and_raw() -> v2.ModelInferRequest:
    request = mlp_request()
    request.inputs[0].contents.fp32_contents.extend([0.0] * 128)
    return request


def fp16_typed() -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="input", datatype="FP16", shape=[2, 64])
    tensor.contents.fp32_contents.extend([0.0] * 128)  # FP16 has no typed field of its own
    return request


def no_inputs() -> v2.ModelInferRequest:
    return v2.ModelInferRequest(model_name="mlp")


def duplicate_input() -> v2.ModelInferRequest:
    request = mlp_request()
    request.inputs.add(name="input", datatype="FP32", shape=[2, 64])
    request.raw_input_contents.append(bytes(512))
    return request


def with_output(request: v2.ModelInferRequest, name: str) -> v2.ModelInferRequest:
    request.outputs.add(name=name)
    return request


def for_model(model: str, version: str = "") -> Callable[[], v2.ModelInferRequest]:
    def build() -> v2.ModelInferRequest:
        request = mlp_request()
        request.model_name, request.model_version = model, version
        return request
    return build


def priority_string() -> v2.ModelInferRequest:
    request = mlp_request()
    request.parameters["priority"].string_param = "high"
    return request


def priority_too_large() -> v2.ModelInferRequest:
    request = mlp_request()
    request.parameters["priority"].uint64_param = 1 << 40
    return request


@dataclass(frozen=True)
class Case:
    build: Callable[[], v2.ModelInferRequest]
    code: grpc.StatusCode
    field: str = ""  # the BadRequest field violation that must be present
    reason: str = ""  # the ErrorInfo reason, when not the code's own name
    triton: bool = True  # tritonclient can send it (it refuses a string priority itself)
    says: str = ""  # what the message must contain when the details are not at hand

    @property
    def named_in_message(self) -> str:
        return self.says or f"{self.field}:"


CASES: dict[str, Case] = {
    "wrong_shape": Case(lambda: mlp_request((2, 63)), INVALID, "inputs[0].shape[1]"),
    "wrong_rank": Case(lambda: mlp_request((2, 64, 1)), INVALID, "inputs[0].shape"),
    "zero_dim": Case(lambda: mlp_request((0, 64)), INVALID, "inputs[0].shape[0]"),
    "negative_dim": Case(lambda: mlp_request((-2, 64), nbytes=512), INVALID,
                         "inputs[0].shape[0]"),
    "wrong_datatype": Case(lambda: mlp_request(datatype="FP64", nbytes=1024), INVALID,
                           "inputs[0].datatype"),
    "raw_one_byte_short": Case(lambda: mlp_request(nbytes=511), INVALID,
                               "raw_input_contents[0]"),
    "raw_blob_count": Case(blobs_for_two_inputs, INVALID, "raw_input_contents"),
    "contents_with_raw": Case(contents_and_raw, INVALID, "inputs[0].contents"),
    "typed_count_mismatch": Case(lambda: typed_request(127), INVALID,
                                 "inputs[0].contents.fp32_contents"),
    # mlp takes FP32, so the datatype is what is wrong (tests/unit covers an FP16 model).
    "fp16_typed": Case(fp16_typed, INVALID, "inputs[0].datatype"),
    "missing_input": Case(no_inputs, INVALID, "inputs"),
    "unknown_input": Case(lambda: mlp_request(name="image"), INVALID, "inputs[0].name"),
    "duplicate_input": Case(duplicate_input, INVALID, "inputs[1].name"),
    "unknown_output": Case(lambda: with_output(mlp_request(), "logits"), INVALID,
                           "outputs[0].name"),
    "unknown_model": Case(for_model("no-such-model"), NOT_FOUND, reason="MODEL_NOT_FOUND"),
    "unknown_version": Case(for_model("mlp", "99"), NOT_FOUND,
                            reason="MODEL_VERSION_NOT_FOUND"),
    "priority_string": Case(priority_string, INVALID, "parameters.priority", triton=False),
    "priority_too_large": Case(priority_too_large, INVALID, "parameters.priority",
                               says="parameter 'priority'"),
}


# --- the two clients ------------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    message: str
    fields: set[str] | None  # None: the client does not expose the status details
    reason: str | None


def send_raw(target: str, request: v2.ModelInferRequest, timeout_s: float = 30) -> Failure:
    with grpc.insecure_channel(target) as channel:
        try:
            GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=timeout_s)
        except grpc.RpcError as err:
            rich = from_rpc_error(err)
            return Failure(err.code(), err.details() or "",
                           {v.field for v in rich.violations}, rich.reason)
    pytest.fail("the request succeeded")


def triton_inputs(request: v2.ModelInferRequest) -> list[grpcclient.InferInput]:
    """The request's inputs as tritonclient objects, byte for byte the same on the wire.

    tritonclient has no public setter for typed contents or a blob of the wrong size, so the
    tensor proto and the blob are set on the InferInput directly.
    """
    inputs = []
    for i, tensor in enumerate(request.inputs):
        inp = grpcclient.InferInput(tensor.name, list(tensor.shape), tensor.datatype)
        inp._input.ParseFromString(tensor.SerializeToString())
        if i < len(request.raw_input_contents):
            inp._raw_content = request.raw_input_contents[i]
        inputs.append(inp)
    return inputs


def send_triton(target: str, request: v2.ModelInferRequest,
                timeout_s: float = 30) -> Failure:
    client = grpcclient.InferenceServerClient(target)
    priority = 0
    if "priority" in request.parameters:
        priority = request.parameters["priority"].uint64_param
    try:
        client.infer(request.model_name, triton_inputs(request),
                     model_version=request.model_version,
                     outputs=[grpcclient.InferRequestedOutput(o.name) for o in request.outputs],
                     priority=priority, client_timeout=timeout_s)
    except InferenceServerException as exc:
        code = getattr(grpc.StatusCode, str(exc.status()).removeprefix("StatusCode."))
        return Failure(code, exc.message() or "", None, None)
    finally:
        client.close()
    pytest.fail("the request succeeded")


SENDERS = {"raw": send_raw, "triton": send_triton}


def assert_failure(failure: Failure, case: Case) -> None:
    assert failure.code == case.code, failure
    if case.field:
        if failure.fields is not None:
            assert case.field in failure.fields, failure
        else:  # tritonclient keeps only the message; it names the first violations
            assert case.named_in_message in failure.message, failure
    if case.reason and failure.reason is not None:
        assert failure.reason == case.reason, failure


# --- the main cluster -----------------------------------------------------------------------

@pytest.mark.parametrize("via", sorted(SENDERS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_infer_request(cluster: Cluster, name: str, via: str) -> None:
    case = CASES[name]
    if via == "triton" and not case.triton:
        # What tritonclient does instead: it refuses the reserved parameter on the client.
        client = grpcclient.InferenceServerClient(cluster.target)
        with pytest.raises(InferenceServerException, match="reserved parameter"):
            client.infer("mlp", triton_inputs(mlp_request()), parameters={"priority": "high"})
        client.close()
        return
    assert_failure(SENDERS[via](cluster.target, case.build()), case)


LONG = "x" * 10_000

OVERLONG_NAMES: dict[str, tuple[Callable[[], v2.ModelInferRequest], set[grpc.StatusCode]]] = {
    "model": (for_model(LONG), {NOT_FOUND, INVALID}),
    "input": (lambda: mlp_request(name=LONG), {INVALID}),
    "output": (lambda: with_output(mlp_request(), LONG), {INVALID}),
}


@pytest.mark.parametrize("what", sorted(OVERLONG_NAMES))
def test_overlong_names_still_get_their_status(cluster: Cluster, what: str) -> None:
    """An error that echoes a 10,000-character name must still fit gRPC's trailer limit
    (16 KiB), else the client sees RESOURCE_EXHAUSTED 'Stream removed' instead."""
    build, codes = OVERLONG_NAMES[what]
    failure = send_raw(cluster.target, build())
    assert failure.code in codes, failure.message[:300]


def test_invalid_argument_is_the_sdk_class(cluster: Cluster) -> None:
    with maas.Client(cluster.target) as client, pytest.raises(maas.InvalidArgument) as caught:
        client.infer("mlp", {"input": np.zeros((2, 63), np.float32)})
    assert caught.value.code == INVALID
    assert [v.field for v in caught.value.violations] == ["inputs[0].shape[1]"]
    with maas.Client(cluster.target) as client, pytest.raises(maas.ModelNotFound):
        client.infer("nope", {"input": np.zeros((2, 64), np.float32)})


@pytest.mark.parametrize("via", sorted(SENDERS))
def test_expired_deadline(cluster: Cluster, via: str) -> None:
    failure = SENDERS[via](cluster.target, mlp_request(), timeout_s=0.001)
    assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED


# --- ModelService ---------------------------------------------------------------------------

def mlp_weights() -> bytes:
    """Weights of the default mlp, as safetensors (zeros; only the shapes matter)."""
    shapes = {"layers.0.weight": (256, 64), "layers.0.bias": (256,),
              "layers.2.weight": (256, 256), "layers.2.bias": (256,),
              "layers.4.weight": (10, 256), "layers.4.bias": (10,)}
    return save({k: np.zeros(s, np.float32) for k, s in shapes.items()})


REGISTER_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "unknown_architecture": (dict(architecture="resnet"), "architecture",
                             "UNKNOWN_ARCHITECTURE"),
    "bad_name": (dict(name="bad name!"), "name", "INVALID_ARGUMENT"),
    "config_not_json": (dict(config="{not json"), "config_json", "INVALID_ARGUMENT"),
    "config_unknown_key": (dict(config={"depth": 3}), "config.depth", "INVALID_ARGUMENT"),
    # `hidden` is a list of widths: never INTERNAL for bad input.
    "config_wrong_type": (dict(config={"hidden": 256}), "config.hidden", "INVALID_ARGUMENT"),
    "weights_not_safetensors": (dict(weights=b"PK\x03\x04 a zip, not safetensors"), "weights",
                                "INVALID_WEIGHTS"),
    "mlp_weights_as_cnn": (dict(architecture="cnn"), "weights.conv1.weight",
                           "WEIGHTS_MISMATCH"),
}


@pytest.mark.parametrize("name", sorted(REGISTER_CASES))
def test_register_model_bad_input(cluster: Cluster, name: str) -> None:
    changes, field, reason = REGISTER_CASES[name]
    args: dict[str, Any] = {"name": f"bad-{name.replace('_', '-')}", "architecture": "mlp",
            "weights": mlp_weights(), "config": None, **changes}
    with grpc.insecure_channel(cluster.target) as channel, pytest.raises(grpc.RpcError) as err:
        ModelServiceStub(channel).RegisterModel(register_request(**args), timeout=30)
    assert err.value.code() == INVALID
    rich = from_rpc_error(err.value)
    assert isinstance(rich, maas.InvalidArgument)
    assert rich.reason == reason
    assert field in {v.field for v in rich.violations}, rich.violations
    with maas.Client(cluster.target) as client, pytest.raises(maas.ModelNotFound):
        client.get_model(args["name"])  # nothing was registered


def test_get_model_unknown(cluster: Cluster) -> None:
    with grpc.insecure_channel(cluster.target) as channel, pytest.raises(grpc.RpcError) as err:
        ModelServiceStub(channel).GetModel(mpb.GetModelRequest(name="no-such-model"), timeout=30)
    assert err.value.code() == NOT_FOUND
    assert from_rpc_error(err.value).reason == "MODEL_NOT_FOUND"


# --- hostile tenant: every field that reaches Redis, disk or memory is bounded (issue 12) ---

def refusal(call: Callable[..., Any], request: Any) -> tuple[grpc.StatusCode, set[str], str]:
    """(code, BadRequest fields, message) of a call that must fail."""
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=30)
    rich = from_rpc_error(err.value)
    return err.value.code(), {v.field for v in rich.violations}, err.value.details() or ""


@pytest.fixture
def stubs(cluster: Cluster) -> Iterator[dict[str, Any]]:
    with grpc.insecure_channel(cluster.target, options=[
            ("grpc.max_send_message_length", 64 * MIB)]) as channel:
        yield {"jobs": InferenceServiceStub(channel), "training": TrainingServiceStub(channel),
               "datasets": DatasetServiceStub(channel), "models": ModelServiceStub(channel),
               "queue": QueueServiceStub(channel), "v2": GRPCInferenceServiceStub(channel)}


def submit(**fields: Any) -> ipb.SubmitInferenceRequest:
    return ipb.SubmitInferenceRequest(model="mlp", inputs=[ipb.Tensor(
        name="input", datatype="FP32", shape=[1, 64], raw=bytes(256))], **fields)


def idempotency_keys(cluster: Cluster) -> list[bytes]:
    client = cluster.redis.client()
    try:
        return list(client.scan_iter(match="*:idem:*", count=1000))
    finally:
        client.close()


def test_16_mib_request_id_never_becomes_a_redis_key(cluster: Cluster,
                                                      stubs: dict[str, Any]) -> None:
    """Found: a 16 MiB request_id on SubmitInference became a 16 MiB Redis key (24 h)."""
    code, fields, message = refusal(stubs["jobs"].SubmitInference,
                                    submit(request_id="r" * (16 * MIB)))
    assert (code, fields) == (INVALID, {"request_id"}), message
    assert "at most 128" in message
    assert all(len(key) < 1024 for key in idempotency_keys(cluster))
    assert stubs["jobs"].SubmitInference(submit(request_id="r" * 128), timeout=30).job.job_id


def long_id_infer() -> v2.ModelInferRequest:
    request = mlp_request()
    request.id = "i" * 129
    return request


@pytest.mark.parametrize(("rpc", "build", "field"), [
    ("jobs.SubmitInference", lambda: submit(deadline_ms=2**63 - 1), "deadline_ms"),
    ("jobs.SubmitInference", lambda: submit(deadline_ms=24 * 3600 * 1000 + 1), "deadline_ms"),
    ("jobs.SubmitInference", lambda: submit(priority=2**32 - 1), "priority"),
    ("jobs.SubmitInference", lambda: submit(priority=1_000_001), "priority"),
    ("jobs.WaitJob", lambda: ipb.WaitJobRequest(job_id="mlp:1", timeout_ms=-1), "timeout_ms"),
    ("v2.ModelInfer", long_id_infer, "id"),
    ("training.CreateTrainingJob", lambda: tpb.CreateTrainingJobRequest(
        spec=tpb.TrainingSpec(model_name="m", architecture="mlp", dataset="digits"),
        request_id="r" * 129), "request_id"),
    ("training.ListTrainingJobs", lambda: tpb.ListTrainingJobsRequest(page_token="abc"),
     "page_token"),
    ("training.ListTrainingJobs", lambda: tpb.ListTrainingJobsRequest(page_size=-1),
     "page_size"),
    ("datasets.ListDatasets", lambda: dpb.ListDatasetsRequest(page_token="x" * 100_000),
     "page_token"),
], ids=["deadline-2e63", "deadline-over-24h", "priority-2e32", "priority-over-max",
        "wait-negative", "v2-id", "training-request-id", "page-token-abc", "page-size-negative",
        "dataset-page-token"])
def test_out_of_range_field_is_named(stubs: dict[str, Any], rpc: str,
                                     build: Callable[[], Any], field: str) -> None:
    """Each was INTERNAL (protobuf "Value out of range", Redis "min or max is not a float")
    or went into Redis unbounded."""
    stub, method = rpc.split(".")
    code, fields, message = refusal(getattr(stubs[stub], method), build())
    assert (code, fields) == (INVALID, {field}), message


def test_stream_infer_long_id_is_an_in_band_error(stubs: dict[str, Any]) -> None:
    [response] = stubs["v2"].ModelStreamInfer(iter([long_id_infer()]), timeout=30)
    assert "at most 128" in response.error_message


def test_huge_page_sizes_are_cut(stubs: dict[str, Any]) -> None:
    stubs["training"].ListTrainingJobs(tpb.ListTrainingJobsRequest(page_size=2**31 - 1),
                                       timeout=30)
    stubs["queue"].ListDeadLetters(qpb.ListDeadLettersRequest(model="mlp", page_size=2**31 - 1),
                                   timeout=30)
    listed = stubs["datasets"].ListDatasets(dpb.ListDatasetsRequest(page_size=2**31 - 1),
                                            timeout=30)
    assert {"digits", "parity", "majority"} <= {d.name for d in listed.datasets}


def training(config: dict[str, Any], **fields: Any) -> tpb.CreateTrainingJobRequest:
    return tpb.CreateTrainingJobRequest(spec=tpb.TrainingSpec(
        model_name="hostile", architecture="mlp", dataset="digits",
        config_json=json.dumps(config), **fields))


@pytest.mark.parametrize(("request_", "fields", "says"), [
    # Found: queued, an mlp of 4e11 parameters with lr=1e308.
    (training({"hidden": [65536] * 100}, lr=1e308), {"spec.config.hidden", "spec.lr"}, ""),
    (training({"hidden": [16384, 16384]}), {"spec.config"}, "MAAS_TRAIN_MAX_PARAMS"),
    (training({}, batch_size=65537), {"spec.batch_size"}, ""),
    (training({}, epochs=10_001), {"spec.epochs"}, ""),
    (training({}, max_steps=2**63 - 1), {"spec.max_steps"}, ""),
    (training({}, lr=float("inf")), {"spec.lr"}, ""),
    (tpb.CreateTrainingJobRequest(spec=tpb.TrainingSpec(
        model_name="hostile", architecture="mlp", dataset="digits",
        config_json="[" * 100_000)), {"spec.config_json"}, ""),
], ids=["attack-spec", "over-param-budget", "batch", "epochs", "max-steps", "lr-inf",
        "deep-json"])
def test_training_spec_budget(stubs: dict[str, Any], request_: tpb.CreateTrainingJobRequest,
                              fields: set[str], says: str) -> None:
    code, found, message = refusal(stubs["training"].CreateTrainingJob, request_)
    assert (code, found) == (INVALID, fields), message
    assert says in message


@pytest.mark.parametrize(("name", "field"), [
    ("labels_2e31", "labels"),  # was INTERNAL: num_classes overflowed int32
    ("npy_shape_1e12", "features"),  # was INTERNAL: numpy tried to allocate 7 TiB
    ("safetensors_shape_1e12", "dataset"),
    ("safetensors_deep_json", "dataset"),
])
def test_hostile_dataset_upload(stubs: dict[str, Any], name: str, field: str) -> None:
    file_format, data = HOSTILE_DATASETS[name]
    requests = upload_requests(f"hostile-{name.replace('_', '-')}", file_format, data)
    code, fields, message = refusal(stubs["datasets"].UploadDataset, iter(requests))
    assert (code, fields) == (INVALID, {field}), message


@pytest.mark.parametrize(("request_", "field"), [
    (mpb.RegisterModelRequest(name="hostile", architecture="mlp", config_json="[" * 100_000,
                              weights=b"x"), "config_json"),
    (mpb.RegisterModelRequest(name="hostile", architecture="mlp",
                              config_json='{"hidden": [' + "1" * 5000 + "]}",
                              weights=b"x"), "config_json"),
    (mpb.RegisterModelRequest(name="hostile", architecture="mlp",
                              config_json=json.dumps({"hidden": [4] * 17}), weights=b"x"),
     "config.hidden"),
    (mpb.RegisterModelRequest(name="hostile", architecture="mlp",
                              weights=HOSTILE_WEIGHTS["deep_json"]), "weights"),
    (mpb.RegisterModelRequest(name="hostile", architecture="mlp",
                              weights=HOSTILE_WEIGHTS["huge_int"]), "weights"),
], ids=["deep-config", "huge-int-config", "17-layers", "deep-header", "huge-int-header"])
def test_hostile_register_model(stubs: dict[str, Any], request_: mpb.RegisterModelRequest,
                                field: str) -> None:
    code, fields, message = refusal(stubs["models"].RegisterModel, request_)
    assert (code, fields) == (INVALID, {field}), message


def test_cluster_survives_bad_input(cluster: Cluster) -> None:
    """Runs after the cases above (pytest keeps file order): every process is alive."""
    for name in ("scheduler", "gateway", "worker-1", "worker-2"):
        assert cluster.service(name).poll() is None, f"{name} died"
    x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    with maas.Client(cluster.target) as client:
        assert client.infer("mlp", {"input": x})["output"].shape == (2, 10)


# --- a gateway with a small message limit ---------------------------------------------------

@pytest.fixture(scope="module")
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("small"), workers=1,
                            max_message_bytes=str(MIB))
    yield running
    stop_cluster(running)


def rows_of(nbytes: int) -> v2.ModelInferRequest:
    return mlp_request((nbytes // 256, 64))  # 256 bytes a row


@pytest.mark.parametrize("via", sorted(SENDERS))
def test_message_over_the_setting(small_cluster: Cluster, via: str) -> None:
    """Over MAAS_MAX_MESSAGE_BYTES but under the transport's limit: the gateway says why."""
    failure = SENDERS[via](small_cluster.target, rows_of(3 * MIB // 2))
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MAAS_MAX_MESSAGE_BYTES" in failure.message
    assert failure.reason in (None, "MESSAGE_TOO_LARGE")


@pytest.mark.parametrize("via", sorted(SENDERS))
def test_message_far_over_the_setting(small_cluster: Cluster, via: str) -> None:
    """Far above the setting, the transport itself refuses the message."""
    failure = SENDERS[via](small_cluster.target, rows_of(5 * MIB))
    assert failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_small_cluster_survives(small_cluster: Cluster) -> None:
    for name in ("scheduler", "gateway", "worker-1"):
        assert small_cluster.service(name).poll() is None, f"{name} died"
    with maas.Client(small_cluster.target) as client:
        out = client.infer("mlp", {"input": np.ones((4, 64), np.float32)})
    assert out["output"].shape == (4, 10)


# --- a deadline that passes while the job is queued -----------------------------------------

@pytest.fixture(scope="module")
def idle_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster whose only worker has been stopped: jobs stay queued."""
    running = start_cluster(tmp_path_factory.mktemp("idle"), workers=1,
                            require_live_worker="off")
    try:
        worker = running.service("worker-1")
        worker.send_signal(signal.SIGTERM)
        worker.wait(15)
        yield running
    finally:
        stop_cluster(running)


def job_hashes(cluster: Cluster, model: str) -> dict[str, dict[Any, Any]]:
    """Every job hash of a model, by key (SCAN, as an operator would look)."""
    client = cluster.redis.client()
    try:
        return {key.decode(): client.hgetall(key)
                for key in client.scan_iter(match=keys.job(model, "*"))}
    finally:
        client.close()


def outcomes(cluster: Cluster, job_id: str) -> list[dict[Any, Any]]:
    """The replies any gateway's reply stream holds for a job."""
    client = cluster.redis.client()
    try:
        return [fields for stream in client.scan_iter(match=keys.reply_stream("*", "*"))
                for _, fields in client.xrange(stream) if fields[b"job"] == job_id.encode()]
    finally:
        client.close()


def test_deadline_passed_while_queued_never_runs(idle_cluster: Cluster) -> None:
    x = np.zeros((1, 1, 28, 28), np.float32)
    with maas.Client(idle_cluster.target) as client, pytest.raises(maas.DeadlineExceeded):
        client.infer("cnn", {"input": x}, timeout_s=0.5)
    # The gateway ends the queued job as its caller's deadline passes: it will never run.
    # (A synchronous call's job is lean: its hash is the cancel mark, see scheduler/lua.)
    [(key, job)] = job_hashes(idle_cluster, "cnn").items()
    assert job == {b"state": b"EXPIRED"}

    idle_cluster.local.add("worker-x", [sys.executable, "-m", "worker", "--id", "worker-x"])
    client = idle_cluster.redis.client()
    deadline = time.monotonic() + 60
    while client.xlen(keys.stream("cnn")) > 0:  # the new worker drops the dead entry
        assert time.monotonic() < deadline, "the new worker never read the stream"
        time.sleep(0.1)
    client.close()
    assert job_hashes(idle_cluster, "cnn")[key] == {b"state": b"EXPIRED"}
    assert not outcomes(idle_cluster, key.rsplit(":", 1)[-1]), "the expired job ran"
    # The worker that expired it is healthy and serves the next request.
    with maas.Client(idle_cluster.target) as client:
        assert client.infer("cnn", {"input": x})["output"].shape == (1, 10)
    check(idle_cluster.redis.url, "12 deadline passing while queued", ["cnn"])
