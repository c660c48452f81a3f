"""protos/maas/v1/errors.proto is the error contract: its `ErrorReason` values are exactly the
reasons of maas.errors, each commented with the class's gRPC code and detail types; the errors
table of the docs says the same; any reason (an unknown one too) maps back to a typed error."""

from __future__ import annotations

import re
import tempfile
from importlib import resources
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2, descriptor_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_tools import protoc

from gateway.errors import to_status
from maas import errors
from maas.errors import BY_REASON, MaasError, error_class_for
from maas.rpc import from_rpc_error
from maas.v1 import errors_pb2
from tests.unit.test_errors import StatusRpcError

ROOT = Path(__file__).resolve().parents[2]
PROTO = "maas/v1/errors.proto"
TABLE = ROOT / "docs/errors.md"
TREE = sorted(BY_REASON.values(), key=lambda cls: cls.__name__)
# The last line of each value's comment in errors.proto.
CODE_LINE = re.compile(r"Code: (\w+)\. Details: (\w+(?:, \w+)*)\.\s*$")


def _compiled() -> descriptor_pb2.FileDescriptorProto:
    """errors.proto as protoc reads it, comments included (generated stubs drop them)."""
    include = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "errors.binpb"
        assert protoc.main(["protoc", f"--proto_path={ROOT / 'protos'}", f"--proto_path={include}",
                            "--include_source_info", f"--descriptor_set_out={out}", PROTO]) == 0
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    (found,) = [f for f in files if f.name == PROTO]
    return found


def _contract() -> dict[str, tuple[str, tuple[str, ...]]]:
    """reason → (gRPC code name, detail types), as the comments of ErrorReason state them."""
    proto = _compiled()
    (index,) = [i for i, e in enumerate(proto.enum_type) if e.name == "ErrorReason"]
    comments = {tuple(loc.path): loc.leading_comments for loc in proto.source_code_info.location}
    enum_field = descriptor_pb2.FileDescriptorProto.ENUM_TYPE_FIELD_NUMBER
    value_field = descriptor_pb2.EnumDescriptorProto.VALUE_FIELD_NUMBER
    contract = {}
    for i, value in enumerate(proto.enum_type[index].value):
        if value.number == 0:
            continue
        comment = comments.get((enum_field, index, value_field, i), "")
        line = CODE_LINE.search(comment)
        assert line, f"{value.name}: its comment must end 'Code: X. Details: A, B.'"
        contract[value.name] = (line[1], tuple(line[2].split(", ")))
    return contract


CONTRACT = _contract()


def test_the_contract_has_one_value_per_reason_of_the_tree() -> None:
    assert set(CONTRACT) == set(BY_REASON)
    assert len(BY_REASON) == len(TREE) == len(set(TREE))  # one class per reason
    generated = {v.name for v in errors_pb2.ErrorReason.DESCRIPTOR.values if v.number}
    assert generated == set(CONTRACT)  # the stubs are generated from this proto


def test_the_zero_value_is_unspecified() -> None:
    assert errors_pb2.ErrorReason.Name(0) == "ERROR_REASON_UNSPECIFIED"


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_each_class_has_the_code_and_details_of_its_reason(cls: type[MaasError]) -> None:
    assert CONTRACT[cls.reason] == (cls.code.name, cls.detail_types)


def test_the_gateway_sends_the_contracts_domain() -> None:
    domain = errors_pb2.ErrorReason.DESCRIPTOR.GetOptions().Extensions[errors_pb2.error_domain]
    assert domain == errors.ERROR_DOMAIN == "maas.dev"
    (info, *_) = _details(to_status(errors.ModelNotFound("no model")))
    assert info.TypeName() == "google.rpc.ErrorInfo"
    unpacked = error_details_pb2.ErrorInfo()
    info.Unpack(unpacked)
    assert (unpacked.reason, unpacked.domain) == ("MODEL_NOT_FOUND", domain)
    header = _compiled().source_code_info.location
    assert any(f'"{domain}"' in loc.leading_comments for loc in header)  # the file comment


def _details(status: grpc.Status) -> list[any_pb2.Any]:
    (raw,) = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    return list(status_pb2.Status.FromString(raw).details)


def _sent(cls: type[MaasError]) -> tuple[str, ...]:
    """The detail types the gateway sends for an error of `cls` with every detail it declares."""
    declared = cls.detail_types
    err = cls("what happened",
              violations=(errors.FieldViolation("f", "bad"),) if "BadRequest" in declared else (),
              quota_violations=(errors.QuotaViolation("tenant:t", "used up"),)
              if "QuotaFailure" in declared else (),
              retry_delay_s=0.5 if "RetryInfo" in declared else None)
    return tuple(d.TypeName().removeprefix("google.rpc.") for d in _details(to_status(err)))


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_the_declared_details_are_what_the_gateway_sends(cls: type[MaasError]) -> None:
    assert _sent(cls) == cls.detail_types


# --- the table of docs/errors.md ----------------------------------------------------------

def _table() -> dict[str, tuple[str, tuple[str, ...]]]:
    """reason → (code, detail types) of each row `| REASON | CODE | details | meaning | do |`."""
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| ([^|]+) \|", TABLE.read_text(), re.MULTILINE)
    table = {reason: (code, tuple(d.strip(" `") for d in details.split(",")))
             for reason, code, details in rows}
    assert len(table) == len(rows), "a reason has two rows"
    return table


def test_the_docs_table_lists_every_reason_with_its_code_and_details() -> None:
    assert _table() == CONTRACT


def test_the_readme_links_the_table() -> None:
    assert "docs/errors.md" in (ROOT / "README.md").read_text()


# --- the SDK: any reason back to a typed error --------------------------------------------

@pytest.mark.parametrize("reason", sorted(CONTRACT))
def test_every_reason_of_the_contract_is_a_typed_error(reason: str) -> None:
    code = getattr(grpc.StatusCode, CONTRACT[reason][0])
    cls = error_class_for(code, reason)
    assert cls.reason == reason and cls.code == code


# The class of each gRPC code itself; every other code is the root, MaasError.
BY_CODE = {grpc.StatusCode.CANCELLED: errors.Cancelled,
           grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
           grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
           grpc.StatusCode.NOT_FOUND: errors.NotFound,
           grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
           grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
           grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
           grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
           grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated}


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK],
                         ids=lambda c: c.name)
def test_a_reason_from_a_newer_server_is_the_class_of_its_code(code: grpc.StatusCode) -> None:
    """The wire round trip of a reason this SDK does not know: typed by its code, keeping the
    reason, code, message and details."""
    newer = MaasError("from the future", reason="A_NEWER_REASON", retry_delay_s=0.5)
    newer.code = code
    back = from_rpc_error(StatusRpcError.of(to_status(newer)))
    assert type(back) is BY_CODE.get(code, MaasError)
    assert (back.code, back.reason, back.message) == (code, "A_NEWER_REASON", "from the future")
    assert back.retry_delay_s == 0.5
    assert type(errors.by_code_name(code.name, "x", "A_NEWER_REASON")) is type(back)
