"""Contracts for every language: descriptor names are repository paths, and
`protoc -I protos -I protos/third_party` (materialised from pip packages by
scripts/third_party_protos.py) compiles every public proto with gRPC's and Google's."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

from gateway.reflection import third_party_files
from maas.inference import grpc_service_pb2
from maas.v1 import (
    dataset_service_pb2,
    generation_service_pb2,
    inference_service_pb2,
    key_service_pb2,
    model_service_pb2,
    queue_service_pb2,
    training_service_pb2,
)
from runtime.queue.v1 import queue_pb2, runner_pb2

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = sorted(str(p.relative_to(ROOT / "protos"))
                for p in (ROOT / "protos/maas").rglob("*.proto"))


def protoc(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def without_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        without_json_names(message.nested_type)


@pytest.fixture(scope="module")
def third_party(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("protos") / "third_party"
    subprocess.run([sys.executable, "scripts/third_party_protos.py", str(dest)], cwd=ROOT,
                   check=True, timeout=120)
    return dest


@pytest.mark.parametrize("module", [grpc_service_pb2, model_service_pb2,
                                    training_service_pb2, dataset_service_pb2,
                                    inference_service_pb2, key_service_pb2,
                                    queue_service_pb2, generation_service_pb2])
def test_public_descriptor_names_are_paths_under_protos(module: ModuleType) -> None:
    assert (ROOT / "protos" / module.DESCRIPTOR.name).is_file()


@pytest.mark.parametrize("module", [queue_pb2, runner_pb2])
def test_internal_descriptor_names_are_paths_under_internal_protos(module: ModuleType) -> None:
    assert (ROOT / "internal/protos" / module.DESCRIPTOR.name).is_file()
    assert not (ROOT / "protos" / module.DESCRIPTOR.name).exists()


def test_every_public_proto_compiles_with_the_third_party_root(
        third_party: Path, tmp_path: Path) -> None:
    assert "maas/inference/grpc_service.proto" in PUBLIC
    assert {p.name for p in third_party.rglob("LICENSE")} == {"LICENSE"}
    protoc("-I", "protos", "-I", str(third_party), f"--descriptor_set_out={tmp_path}/all.binpb",
           *PUBLIC, "google/rpc/status.proto", "google/rpc/error_details.proto",
           "google/rpc/code.proto", "grpc/health/v1/health.proto",
           "grpc/reflection/v1alpha/reflection.proto", "grpc/reflection/v1/reflection.proto")


def test_rendered_grpc_protos_compile_to_the_served_descriptors(
        third_party: Path, tmp_path: Path) -> None:
    served = {proto.name: proto for proto in third_party_files()}
    out = tmp_path / "grpc.binpb"
    protoc("-I", str(third_party), f"--descriptor_set_out={out}", *served)
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    for proto in compiled.file:
        without_json_names(proto.message_type)  # protoc adds them; the pip descriptors don't
        assert proto == served[proto.name], proto.name
    assert len(compiled.file) == len(served) == 3
