"""Server reflection, v1 and v1alpha, over one pool whose file names are repository paths.

grpcio-reflection serves only `grpc.reflection.v1alpha`; `grpc.reflection.v1` has the same
messages (names, field numbers) in another package, so one servicer answers both: the bytes
on the wire are identical. Files that come from pip packages carry the names they have
upstream and under protos/third_party/ (scripts/third_party_protos.sh materialises them):
grpcio-health-checking's `grpc_health/v1/health.proto` is served as `grpc/health/v1/health.proto`.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from gateway.registration import HotMethodsOnly

V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
HEALTH_FILE = "grpc/health/v1/health.proto"
V1ALPHA_FILE = "grpc/reflection/v1alpha/reflection.proto"
V1_FILE = "grpc/reflection/v1/reflection.proto"


def file_proto(fd: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    return proto


def v1_reflection_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto: v1alpha's messages and service in package
    grpc.reflection.v1, with upstream's v1 file options."""
    proto = file_proto(reflection_pb2.DESCRIPTOR)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name, proto.package = V1_FILE, "grpc.reflection.v1"
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    proto.options.Clear()
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    proto.options.java_multiple_files = True
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    return proto


def third_party_files() -> tuple[descriptor_pb2.FileDescriptorProto, ...]:
    """The served files from pip packages, under their upstream names (gRPC's health and
    both reflections); google/rpc and google/protobuf files keep theirs."""
    health_file = file_proto(health_pb2.DESCRIPTOR)
    health_file.name = HEALTH_FILE
    v1alpha_file = file_proto(reflection_pb2.DESCRIPTOR)
    v1alpha_file.name = V1ALPHA_FILE
    return health_file, v1alpha_file, v1_reflection_file()


def reflection_pool(served: Iterable[FileDescriptor]) -> descriptor_pool.DescriptorPool:
    """One pool with the served files, their dependencies and gRPC's (the v2 contract lives
    in a private pool, so no existing pool holds them all)."""
    pool = descriptor_pool.DescriptorPool()

    def add(proto: descriptor_pb2.FileDescriptorProto) -> None:
        try:
            pool.FindFileByName(proto.name)
        except KeyError:
            pool.Add(proto)

    def add_with_dependencies(fd: FileDescriptor) -> None:
        for dependency in fd.dependencies:
            add_with_dependencies(dependency)
        add(file_proto(fd))

    for fd in served:
        add_with_dependencies(fd)
    for proto in third_party_files():
        add(proto)
    return pool


def enable_reflection(server: HotMethodsOnly, service_names: Iterable[str],
                      pool: descriptor_pool.DescriptorPool) -> None:
    """Serves v1alpha and v1 reflection (both listed) with one servicer."""
    servicer = reflection.aio.ReflectionServicer(
        (*service_names, V1_SERVICE, V1ALPHA_SERVICE), pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": info}),))
