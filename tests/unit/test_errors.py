"""The error tree: (code, reason) → class, any exception → the one MaasError it is answered
with (`classify`), and the gateway's status → the SDK's error."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError

from gateway.errors import INTERNAL_MESSAGE, classify, to_status
from gateway.streaming import error_message
from maas import errors
from maas.client import from_rpc_error
from maas.errors import (
    FieldViolation,
    InvalidArgument,
    MaasError,
    ModelNotFound,
    Unavailable,
    by_code_name,
    error_class_for,
    shown,
)

SUBCLASSES = [errors.InvalidArgument, errors.NotFound, errors.ModelNotFound,
              errors.ModelVersionNotFound, errors.MessageTooLarge, errors.DeadlineExceeded,
              errors.Unavailable, errors.Cancelled, errors.FailedPrecondition,
              errors.IdempotencyKeyReused, errors.JobFailed, errors.TooManyElements,
              errors.QuotaExceeded, errors.Unauthenticated, errors.PermissionDenied,
              errors.QueueStorageFull, errors.ModelAliasNotFound, errors.ModelUnloaded,
              errors.QueueFull,
              errors.ModelVersionInUse, errors.ModelVerifying, errors.ModelQuarantined,
              errors.ModelRejected, errors.ModelTooLarge, errors.ModelTimeout, errors.ModelCrashed,
              errors.JobNotFound, errors.TrainingJobNotFound, errors.DatasetNotFound,
              errors.ApiKeyNotFound, errors.ArchiveNotAllowed, errors.InvalidArchive,
              errors.InvalidWeights, errors.WeightsMismatch, errors.UnknownArchitecture,
              errors.ResourceExhausted, errors.NoLiveWorker, errors.NoWorkerForModel,
              errors.QueueUnreachable, errors.DeadLettered, errors.JobAlreadyFinished,
              errors.ModelNotExplainable, errors.ExplainUnsupported, errors.ModelLoadFailed,
              errors.ModelFailed]
ROOT = Path(__file__).resolve().parents[2]


def test_the_tree_is_complete() -> None:
    """Every error class in the module is listed here, rooted at MaasError."""
    found = {v for v in vars(errors).values()
             if isinstance(v, type) and issubclass(v, MaasError) and v is not MaasError}
    assert found == set(SUBCLASSES)


def test_the_docstring_tree_names_every_class_with_its_code_and_reason() -> None:
    lines = re.findall(r"(\w+) +\((\w+), (\w+)\)", errors.__doc__ or "")
    assert {name: (code, reason) for name, code, reason in lines} == {
        cls.__name__: (cls.code.name, cls.reason) for cls in (MaasError, *SUBCLASSES)}


def _error_bases(node: ast.ClassDef) -> set[str]:
    names = {getattr(base, "id", None) or getattr(base, "attr", None) for base in node.bases}
    return {name for name in names if name is not None}


def test_no_error_class_lives_outside_the_tree() -> None:
    """The SDK can map back only what maas/errors.py defines: no package subclasses a
    MaasError anywhere else."""
    tree = {cls.__name__ for cls in (MaasError, *SUBCLASSES)}
    elsewhere = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                 for package in ("maas", "gateway", "scheduler", "worker")
                 for path in (ROOT / package).rglob("*.py") if path != ROOT / "maas/errors.py"
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.ClassDef) and _error_bases(node) & tree]
    assert elsewhere == []


def test_reasons_are_unique_and_upper_snake() -> None:
    reasons = [cls.reason for cls in (MaasError, *SUBCLASSES)]
    assert len(set(reasons)) == len(reasons)
    assert all(r.isupper() and " " not in r for r in reasons)


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_error_class_for_each_class(cls: type[MaasError]) -> None:
    assert error_class_for(cls.code, cls.reason) is cls
    # The reason decides, even when it travelled with another code.
    assert error_class_for(grpc.StatusCode.UNKNOWN, cls.reason) is cls


@pytest.mark.parametrize(("code", "reason", "expected"), [
    (grpc.StatusCode.NOT_FOUND, "SOMETHING_ELSE", errors.NotFound),
    (grpc.StatusCode.INVALID_ARGUMENT, "NOT_A_KNOWN_REASON", errors.InvalidArgument),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "", errors.ResourceExhausted),
    (grpc.StatusCode.FAILED_PRECONDITION, "", errors.FailedPrecondition),
    (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", errors.Unavailable),
    (grpc.StatusCode.INTERNAL, "INTERNAL", MaasError),
    (grpc.StatusCode.INTERNAL, "WHATEVER", MaasError),
    (grpc.StatusCode.DATA_LOSS, "DATA_LOSS", MaasError),
    (grpc.StatusCode.PERMISSION_DENIED, "", errors.PermissionDenied),
    (grpc.StatusCode.ABORTED, "", MaasError),
])
def test_error_class_for_falls_back_by_code(code: grpc.StatusCode, reason: str,
                                            expected: type[MaasError]) -> None:
    assert error_class_for(code, reason) is expected


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_by_code_name_round_trip(cls: type[MaasError]) -> None:
    """A failed job carries (code name, reason, message) as data; this rebuilds the error."""
    err = by_code_name(cls.code.name, "it broke", cls.reason)
    assert type(err) is cls
    assert (err.code, err.reason, err.message) == (cls.code, cls.reason, "it broke")


def test_by_code_name_keeps_an_unknown_reason() -> None:
    err = by_code_name("INVALID_ARGUMENT", "bad weights", "NOT_A_KNOWN_REASON")
    assert type(err) is InvalidArgument
    assert err.reason == "NOT_A_KNOWN_REASON"
    assert str(err) == "NOT_A_KNOWN_REASON: bad weights"


def test_by_code_name_with_a_code_no_class_has() -> None:
    err = by_code_name("DATA_LOSS", "gone", "")
    assert type(err) is MaasError
    assert err.code == grpc.StatusCode.DATA_LOSS
    # As from_rpc_error does: with no reason given, the reason is the code's name.
    assert err.reason == "DATA_LOSS"


def test_by_code_name_with_a_bad_code_name() -> None:
    err = by_code_name("NOT_A_CODE", "odd", "")
    assert err.code == grpc.StatusCode.INTERNAL
    assert type(err) is MaasError


def test_shown_keeps_short_text_whole() -> None:
    assert shown("input") == "'input'"
    assert shown("x" * 64) == repr("x" * 64)


def test_shown_cuts_long_text_and_says_how_long() -> None:
    text = shown("y" * 10_000)
    assert text == f"{'y' * 64!r}… (10000 characters)"
    assert shown("abcdef", limit=3) == "'abc'… (6 characters)"


@pytest.mark.parametrize("value", [list(range(10_000)), {str(i): i for i in range(10_000)},
                                   ["z" * 10_000], 10 ** 1000])
def test_shown_bounds_other_values(value: object) -> None:
    assert len(shown(value)) < 200


def test_setting_code_on_an_instance_leaves_the_class_alone() -> None:
    err = by_code_name("ABORTED", "x", "")
    assert err.code == grpc.StatusCode.ABORTED
    assert MaasError.code == grpc.StatusCode.INTERNAL


def test_the_sdk_classes_are_catchable_by_their_parents() -> None:
    with pytest.raises(errors.NotFound):
        raise ModelNotFound("no model")
    with pytest.raises(MaasError):
        raise errors.IdempotencyKeyReused("again")


# --- gateway.errors.to_status → maas.client.from_rpc_error ----------------------------------

class StatusRpcError(grpc.RpcError):
    """What a grpc stub raises for a status: code(), details(), trailing_metadata()."""

    def __init__(self, code: grpc.StatusCode, details: str,
                 metadata: Sequence[tuple[str, str | bytes]] = ()) -> None:
        super().__init__()
        self._code, self._details, self._metadata = code, details, tuple(metadata)

    @classmethod
    def of(cls, status: grpc.Status) -> StatusRpcError:
        return cls(status.code, status.details, status.trailing_metadata)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata


def round_trip(err: MaasError) -> MaasError:
    status = to_status(err)
    assert status.code == err.code
    assert status.details == err.message
    return from_rpc_error(StatusRpcError.of(status))


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_each_class_survives_the_wire(cls: type[MaasError]) -> None:
    back = round_trip(cls("what happened"))
    assert type(back) is cls
    assert (back.code, back.reason, back.message) == (cls.code, cls.reason, "what happened")
    assert back.violations == ()
    assert back.retry_delay_s is None


def test_violations_survive_the_wire() -> None:
    violations = (FieldViolation("inputs[0].shape[1]", "dim 63 does not fit [-1, 64]"),
                  FieldViolation("outputs[0].name", "no output 'x'"))
    back = round_trip(InvalidArgument("bad request", violations=violations))
    assert type(back) is InvalidArgument
    assert back.violations == violations


def test_retry_delay_survives_the_wire() -> None:
    back = round_trip(Unavailable("queue full", retry_delay_s=1.5))
    assert type(back) is Unavailable
    assert back.retry_delay_s == 1.5


def test_quota_failure_survives_the_wire() -> None:
    quota = (errors.QuotaViolation("tenant:acme", "MAAS_TENANT_RATE_PER_S=5 calls per second"),)
    back = round_trip(errors.QuotaExceeded("slow down", retry_delay_s=0.2,
                                           quota_violations=quota))
    assert type(back) is errors.QuotaExceeded
    assert back.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert back.quota_violations == quota
    assert back.retry_delay_s == 0.2


def test_a_reason_given_to_a_class_is_typed_by_it_on_the_sdk_side() -> None:
    """A server raising InvalidArgument(reason="INVALID_WEIGHTS") gives the SDK InvalidWeights."""
    back = round_trip(InvalidArgument("not safetensors", reason="INVALID_WEIGHTS"))
    assert type(back) is errors.InvalidWeights
    assert back.reason == "INVALID_WEIGHTS"


def test_a_reason_without_a_class_survives_the_wire() -> None:
    back = round_trip(InvalidArgument("not safetensors", reason="NOT_A_KNOWN_REASON",
                                      violations=(FieldViolation("weights", "garbage"),)))
    assert type(back) is InvalidArgument
    assert back.reason == "NOT_A_KNOWN_REASON"
    assert [v.field for v in back.violations] == ["weights"]


def test_the_root_survives_the_wire() -> None:
    back = round_trip(MaasError("boom"))
    assert type(back) is MaasError
    assert (back.code, back.reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")


def test_a_plain_status_without_details() -> None:
    """Statuses gRPC makes itself (a refused connection, a deadline) carry no ErrorInfo."""
    plain = StatusRpcError(grpc.StatusCode.UNAVAILABLE, "the queue (Redis) is unreachable")
    back = from_rpc_error(plain)
    assert type(back) is Unavailable
    assert back.reason == "UNAVAILABLE"


def test_unrelated_trailing_metadata_is_ignored() -> None:
    status = to_status(ModelNotFound("no model 'x'"))
    err = StatusRpcError(status.code, status.details,
                         [("x-request-id", "abc"), *status.trailing_metadata])
    assert type(from_rpc_error(err)) is ModelNotFound


# --- gateway.errors.classify: any exception → the MaasError it is answered with ------------

@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_classify_keeps_a_maas_error(cls: type[MaasError]) -> None:
    err = cls("as raised", retry_delay_s=0.5)
    assert classify(err) is err


@pytest.mark.parametrize("exc", [OutOfMemoryError("command not allowed when used memory > "
                                                  "'maxmemory'"),
                                 ResponseError("OOM command not allowed")])
def test_classify_redis_at_maxmemory(exc: Exception) -> None:
    err = classify(exc)
    assert type(err) is errors.QueueStorageFull
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.retry_delay_s == 5.0 and "maxmemory" in err.message
    assert err.__cause__ is exc


@pytest.mark.parametrize("exc", [RedisConnectionError("refused"), ConnectionResetError(),
                                 TimeoutError()])
def test_classify_redis_away(exc: Exception) -> None:
    err = classify(exc)
    assert type(err) is Unavailable
    assert err.message == "the queue (Redis) is unreachable right now; retry shortly"


@pytest.mark.parametrize("exc", [RuntimeError("secret detail"), KeyError("k"),
                                 ResponseError("WRONGTYPE"), ValueError("x" * 10_000)])
def test_classify_anything_else_is_a_short_internal(exc: Exception) -> None:
    err = classify(exc)
    assert type(err) is MaasError
    assert (err.code, err.reason, err.message) == (grpc.StatusCode.INTERNAL, "INTERNAL",
                                                   INTERNAL_MESSAGE)
    assert err.__cause__ is exc  # for the log; the caller sees none of it


def test_in_band_stream_errors_say_code_reason_and_id() -> None:
    """ModelStreamInfer answers a failed request in-band with the same classification."""
    assert error_message(classify(RuntimeError("secret")), "r1") == (
        f"INTERNAL: {INTERNAL_MESSAGE} (request id 'r1')")
    assert error_message(ModelNotFound("no model 'm'"), "") == (
        "NOT_FOUND: no model 'm' [MODEL_NOT_FOUND]")
    assert error_message(classify(RedisConnectionError()), "r2").startswith(
        "UNAVAILABLE: the queue (Redis) is unreachable")
