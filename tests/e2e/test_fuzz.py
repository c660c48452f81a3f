"""Hypothesis-generated v2 and maas.v1 requests against a running gateway: every answer is a
deliberate status (never INTERNAL, never UNKNOWN), no call hangs, every process stays up."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maas.inference import grpc_service_pb2 as v2
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from maas.v1 import inference_service_pb2 as ipb
from maas.v1 import model_service_pb2 as mpb
from maas.v1.inference_service_pb2_grpc import InferenceServiceStub
from maas.v1.model_service_pb2_grpc import ModelServiceStub
from tests.conftest import Cluster

pytestmark = pytest.mark.timeout(300)
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
           grpc.StatusCode.FAILED_PRECONDITION}
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Mostly real names, so that most requests get past the model lookup into validation.
names = st.one_of(st.sampled_from(["cnn", "mlp", "input", "output"]),
                  st.sampled_from(["", "cnn ", "CNN"]), st.text(max_size=300))
datatypes = st.sampled_from(["FP32", "FP16", "BF16", "INT64", "INT8", "UINT8", "BOOL", "BYTES",
                             "FP64", "fp32", "", "FLOAT"])
dims = st.lists(st.one_of(st.integers(-3, 30), st.sampled_from([1, 28, 64, 2**40, -2**40])),
                max_size=6)
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def infer_requests(draw: st.DrawFn) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(
        model_name=draw(st.one_of(st.sampled_from(["cnn", "mlp"]), names)),
        model_version=draw(st.one_of(st.sampled_from(["", "1"]),
                                     st.sampled_from(["2", "0", "-1", "01", "x" * 100]))),
        id=draw(st.text(max_size=40)))
    for _ in range(draw(st.integers(0, 3))):
        t = request.inputs.add(name=draw(names), datatype=draw(datatypes), shape=draw(dims))
        if draw(st.booleans()):
            t.contents.fp32_contents.extend(draw(st.lists(floats, max_size=64)))
        if draw(st.booleans()):
            t.contents.int_contents.extend(draw(st.lists(st.integers(-2**31, 2**31 - 1),
                                                         max_size=8)))
    for _ in range(draw(st.integers(0, 3))):
        request.raw_input_contents.append(draw(st.one_of(
            st.binary(max_size=64), st.just(b"\0" * 3136), st.just(b"\0" * 256))))
    if draw(st.booleans()):
        request.outputs.add(name=draw(names))
    if draw(st.booleans()):
        key = draw(st.sampled_from(["priority", "timeout", "x"]))
        param = request.parameters[key]
        choice = draw(st.integers(0, 3))
        if choice == 0:
            param.int64_param = draw(st.integers(-2**63, 2**63 - 1))
        elif choice == 1:
            param.uint64_param = draw(st.integers(0, 2**64 - 1))
        elif choice == 2:
            param.string_param = draw(st.text(max_size=20))
        else:
            param.double_param = draw(floats)
    return request


def check(call: object, *args: object) -> None:
    try:
        call(*args, timeout=10)  # type: ignore[operator]
    except grpc.RpcError as err:
        code = err.code()  # type: ignore[attr-defined]
        assert code in ALLOWED, f"{code}: {err.details()}"  # type: ignore[attr-defined]
        assert len(err.details() or "") < 4096  # type: ignore[attr-defined]


def test_fuzzed_v2_requests(cluster: Cluster) -> None:
    with grpc.insecure_channel(cluster.target) as channel:
        stub = GRPCInferenceServiceStub(channel)

        @FUZZ
        @given(infer_requests())
        def run(request: v2.ModelInferRequest) -> None:
            check(stub.ModelInfer, request)

        run()

        @FUZZ
        @given(names, st.one_of(st.sampled_from(["", "1", "0", "-1", "latest"]),
                                st.text(max_size=300)))
        def describe(name: str, version: str) -> None:  # metadata and Triton's config
            check(stub.ModelMetadata, v2.ModelMetadataRequest(name=name, version=version))
            check(stub.ModelConfig, v2.ModelConfigRequest(name=name, version=version))

        describe()
        assert stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready
    for name in ("gateway", "worker-1", "worker-2", "scheduler"):
        assert cluster.service(name).poll() is None, f"{name} died"


def test_fuzzed_maas_v1_requests(cluster: Cluster) -> None:
    with grpc.insecure_channel(cluster.target) as channel:
        models, jobs = ModelServiceStub(channel), InferenceServiceStub(channel)

        @FUZZ
        @given(names, st.text(max_size=50), st.binary(max_size=200), st.text(max_size=200))
        def run(name: str, arch: str, weights: bytes, text: str) -> None:
            check(models.RegisterModel, mpb.RegisterModelRequest(
                name=name, architecture=arch, weights=weights, config_json=text))
            check(models.GetModel, mpb.GetModelRequest(name=name))
            check(jobs.GetJob, ipb.GetJobRequest(job_id=text))
            check(jobs.CancelJob, ipb.CancelJobRequest(job_id=name + ":" + text))
            check(jobs.SubmitInference, ipb.SubmitInferenceRequest(
                model=name, request_id=text, deadline_ms=len(text) - 5,
                inputs=[ipb.Tensor(name="input", datatype="FP32", shape=[1, len(weights)],
                                   raw=weights)]))

        run()
    for name in ("gateway", "worker-1", "worker-2", "scheduler"):
        assert cluster.service(name).poll() is None, f"{name} died"
