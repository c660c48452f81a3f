"""Materialises protos/third_party/ (gitignored) from the installed pip packages, so that
`protoc -I protos -I protos/third_party ...` compiles our contracts in any language while the
repository vendors no third-party file:

- google/rpc/{status,error_details,code}.proto: copied from googleapis-common-protos;
- grpc/health/v1/health.proto: grpcio-health-checking ships only its descriptor (named
  grpc_health/v1/health.proto, package grpc.health.v1), rendered here under upstream's path;
- grpc/reflection/v1alpha/reflection.proto from grpcio-reflection's descriptor, and
  grpc/reflection/v1/reflection.proto, the same messages in package grpc.reflection.v1
  (gateway/reflection.py, which serves both).

Each directory gets its package's LICENSE. Rendered files have no comments (descriptors carry
none); upstream's commented files are in github.com/grpc/grpc-proto.

Usage: python scripts/third_party_protos.py [DEST]   (DEST defaults to protos/third_party)
"""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

from google.protobuf import descriptor_pb2

from gateway.reflection import HEALTH_FILE, V1_FILE, V1ALPHA_FILE, third_party_files

Field = descriptor_pb2.FieldDescriptorProto
GOOGLE_RPC = ("google/rpc/status.proto", "google/rpc/error_details.proto",
              "google/rpc/code.proto")
SCALARS = {number: name[len("TYPE_"):].lower() for name, number in Field.Type.items()
           if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")}


def package_file(distribution: str, path: str) -> Path:
    """A file of an installed distribution (its RECORD lists it)."""
    for file in metadata.files(distribution) or ():
        if str(file) == path or str(file).endswith(path):
            return Path(str(file.locate()))
    raise SystemExit(f"{distribution} has no {path}; is it installed?")


def license_of(distribution: str) -> Path:
    for file in metadata.files(distribution) or ():
        if file.name.upper().startswith(("LICENSE", "COPYING")):
            return Path(str(file.locate()))
    raise SystemExit(f"{distribution} ships no license file")


def option_lines(options: descriptor_pb2.FileOptions) -> list[str]:
    lines = []
    for field, value in options.ListFields():
        shown = (f'"{value}"' if isinstance(value, str) else str(value).lower())
        lines.append(f"option {field.name} = {shown};")
    return sorted(lines)


def field_line(field: Field, message: descriptor_pb2.DescriptorProto) -> str:
    kind = SCALARS.get(field.type) or field.type_name
    entry = next((m for m in message.nested_type if m.options.map_entry
                  and field.type_name.endswith(f".{m.name}")), None)
    if entry is not None:
        key, value = entry.field
        kind = f"map<{SCALARS.get(key.type) or key.type_name}, " \
               f"{SCALARS.get(value.type) or value.type_name}>"
    elif field.label == Field.LABEL_REPEATED:
        kind = f"repeated {kind}"
    elif field.proto3_optional:
        kind = f"optional {kind}"
    return f"{kind} {field.name} = {field.number};"


def enum_lines(enum: descriptor_pb2.EnumDescriptorProto) -> list[str]:
    return [f"enum {enum.name} {{",
            *(f"  {value.name} = {value.number};" for value in enum.value), "}"]


def message_lines(message: descriptor_pb2.DescriptorProto) -> list[str]:
    body: list[str] = []
    for nested in message.nested_type:
        if not nested.options.map_entry:
            body += message_lines(nested)
    for enum in message.enum_type:
        body += enum_lines(enum)
    real_oneofs = {f.oneof_index for f in message.field
                   if f.HasField("oneof_index") and not f.proto3_optional}
    for index, field in enumerate(message.field):
        if field.HasField("oneof_index") and field.oneof_index in real_oneofs:
            first = next(f for f in message.field if f.HasField("oneof_index")
                         and f.oneof_index == field.oneof_index)
            if first is field:
                members = [f for f in message.field[index:] if f.HasField("oneof_index")
                           and f.oneof_index == field.oneof_index]
                body += [f"oneof {message.oneof_decl[field.oneof_index].name} {{",
                         *(f"  {field_line(f, message)}" for f in members), "}"]
        else:
            body.append(field_line(field, message))
    return [f"message {message.name} {{", *(f"  {line}" for line in body), "}"]


def service_lines(service: descriptor_pb2.ServiceDescriptorProto) -> list[str]:
    lines = [f"service {service.name} {{"]
    for method in service.method:
        request = ("stream " if method.client_streaming else "") + method.input_type
        reply = ("stream " if method.server_streaming else "") + method.output_type
        lines.append(f"  rpc {method.name}({request}) returns ({reply});")
    return [*lines, "}"]


def render(proto: descriptor_pb2.FileDescriptorProto, source: str) -> str:
    lines = [f"// Rendered by scripts/third_party_protos.py from {source}; see LICENSE.",
             f'syntax = "{proto.syntax or "proto2"}";', "", f"package {proto.package};", ""]
    lines += [f'import "{dependency}";' for dependency in proto.dependency]
    lines += option_lines(proto.options)
    for enum in proto.enum_type:
        lines += ["", *enum_lines(enum)]
    for message in proto.message_type:
        lines += ["", *message_lines(message)]
    for service in proto.service:
        lines += ["", *service_lines(service)]
    return "\n".join(lines) + "\n"


def main(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    for path in GOOGLE_RPC:
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package_file("googleapis-common-protos", path), target)
    shutil.copyfile(license_of("googleapis-common-protos"), dest / "google/rpc/LICENSE")
    version = metadata.version
    sources = {
        HEALTH_FILE: ("grpcio-health-checking", "grpc_health/v1/health_pb2.py"),
        V1ALPHA_FILE: ("grpcio-reflection", "grpc_reflection/v1alpha/reflection_pb2.py"),
        V1_FILE: ("grpcio-reflection", "grpc_reflection/v1alpha/reflection_pb2.py "
                                       "(package renamed to grpc.reflection.v1)"),
    }
    for proto in third_party_files():
        distribution, module = sources[proto.name]
        target = dest / proto.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(proto, f"{distribution} {version(distribution)}: {module}"))
        shutil.copyfile(license_of(distribution), target.parent / "LICENSE")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1
         else Path(__file__).resolve().parents[1] / "protos/third_party")
