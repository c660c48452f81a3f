"""A real gateway answers reflection in v1 and v1alpha with file names that are repository
paths, and its v2 ServerMetadata lists the extensions docs/inference.md documents."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, message_factory
from grpc_reflection.v1alpha import reflection_pb2

from gateway.reflection import V1_SERVICE, V1ALPHA_SERVICE, v1_reflection_file
from maas.inference import grpc_service_pb2, grpc_service_pb2_grpc
from tests.conftest import RedisServer
from tests.inprocess import running_gateway

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
V1 = message_factory.GetMessages([v1_reflection_file()])


@pytest.fixture(scope="module")
def target(redis_server: RedisServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # One gateway for the module: reflection and ServerMetadata read no Redis state.
    with running_gateway(redis_server.url, tmp_path_factory.mktemp("data")) as port:
        yield f"127.0.0.1:{port}"


def ask(target: str, service: str, request_class: Any, response_class: Any,
        **request: Any) -> Any:
    """One request on `service`'s ServerReflectionInfo stream, in that version's messages."""
    with grpc.insecure_channel(target) as channel:
        info = channel.stream_stream(f"/{service}/ServerReflectionInfo",
                                     request_serializer=request_class.SerializeToString,
                                     response_deserializer=response_class.FromString)
        return next(iter(info(iter([request_class(**request)]), timeout=5)))


VERSIONS = {
    "v1": (V1_SERVICE, V1["grpc.reflection.v1.ServerReflectionRequest"],
           V1["grpc.reflection.v1.ServerReflectionResponse"]),
    "v1alpha": (V1ALPHA_SERVICE, reflection_pb2.ServerReflectionRequest,
                reflection_pb2.ServerReflectionResponse),
}


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_reflection_lists_the_services(target: str, version: str) -> None:
    reply = ask(target, *VERSIONS[version], list_services="*")
    names = {s.name for s in reply.list_services_response.service}
    assert {"inference.GRPCInferenceService", "maas.v1.ModelService", "grpc.health.v1.Health",
            V1_SERVICE, V1ALPHA_SERVICE} <= names


@pytest.mark.parametrize("version", sorted(VERSIONS))
@pytest.mark.parametrize("symbol", ["inference.GRPCInferenceService", "maas.v1.ModelService",
                                    "grpc.health.v1.Health", V1_SERVICE])
def test_a_file_by_symbol_is_named_by_its_repository_path(target: str, version: str,
                                                           symbol: str) -> None:
    reply = ask(target, *VERSIONS[version], file_containing_symbol=symbol)
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in reply.file_descriptor_response.file_descriptor_proto]
    assert files, reply
    name = files[0].name
    assert any(symbol.rsplit(".", 1)[1] == s.name for s in files[0].service)
    if name.startswith("maas/"):
        assert (ROOT / "protos" / name).is_file(), name
    else:  # gRPC's own: where scripts/third_party_protos.py materialises it
        assert name in ("grpc/health/v1/health.proto", "grpc/reflection/v1/reflection.proto")


def test_server_metadata_lists_the_documented_extensions(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        reply = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerMetadata(
            grpc_service_pb2.ServerMetadataRequest(), timeout=5)
    documented = re.search(r"ServerMetadata.*?extensions: (.*?)\.\n",
                           (ROOT / "docs/inference.md").read_text(), re.S)
    assert documented is not None
    assert list(reply.extensions) == re.findall(r"`([a-z_()]+)`", documented.group(1))
    assert list(reply.extensions) == ["model_repository", "model_configuration"]
