"""The one error tree of maas. Each error carries its gRPC code and a stable reason.

    MaasError                      (INTERNAL, INTERNAL)
    ├── InvalidArgument            (INVALID_ARGUMENT, INVALID_ARGUMENT) + field violations
    │   ├── ArchiveNotAllowed      (INVALID_ARGUMENT, ARCHIVE_NOT_ALLOWED)
    │   ├── InvalidArchive         (INVALID_ARGUMENT, INVALID_ARCHIVE)
    │   ├── InvalidWeights         (INVALID_ARGUMENT, INVALID_WEIGHTS)
    │   ├── WeightsMismatch        (INVALID_ARGUMENT, WEIGHTS_MISMATCH)
    │   └── UnknownArchitecture    (INVALID_ARGUMENT, UNKNOWN_ARCHITECTURE)
    ├── NotFound                   (NOT_FOUND, NOT_FOUND)
    │   ├── ModelNotFound          (NOT_FOUND, MODEL_NOT_FOUND)
    │   ├── ModelVersionNotFound   (NOT_FOUND, MODEL_VERSION_NOT_FOUND)
    │   │   └── ModelAliasNotFound (NOT_FOUND, MODEL_ALIAS_NOT_FOUND)
    │   ├── JobNotFound            (NOT_FOUND, JOB_NOT_FOUND)
    │   ├── TrainingJobNotFound    (NOT_FOUND, TRAINING_JOB_NOT_FOUND)
    │   ├── DatasetNotFound        (NOT_FOUND, DATASET_NOT_FOUND)
    │   └── ApiKeyNotFound         (NOT_FOUND, API_KEY_NOT_FOUND)
    ├── ResourceExhausted          (RESOURCE_EXHAUSTED, RESOURCE_EXHAUSTED)
    │   ├── MessageTooLarge        (RESOURCE_EXHAUSTED, MESSAGE_TOO_LARGE)
    │   │   └── TooManyElements    (RESOURCE_EXHAUSTED, TOO_MANY_ELEMENTS)
    │   ├── QuotaExceeded          (RESOURCE_EXHAUSTED, QUOTA_EXCEEDED) + quota violations
    │   └── QueueStorageFull       (RESOURCE_EXHAUSTED, QUEUE_STORAGE_FULL)
    ├── Unauthenticated            (UNAUTHENTICATED, UNAUTHENTICATED)
    ├── PermissionDenied           (PERMISSION_DENIED, PERMISSION_DENIED)
    ├── DeadlineExceeded           (DEADLINE_EXCEEDED, DEADLINE_EXCEEDED)
    ├── Unavailable                (UNAVAILABLE, UNAVAILABLE) + retry delay
    │   ├── QueueFull              (UNAVAILABLE, QUEUE_FULL)
    │   ├── NoLiveWorker           (UNAVAILABLE, NO_LIVE_WORKER)
    │   ├── NoWorkerForModel       (UNAVAILABLE, NO_WORKER_FOR_MODEL)
    │   ├── QueueUnreachable       (UNAVAILABLE, QUEUE_UNREACHABLE)
    │   ├── ModelUnloaded          (UNAVAILABLE, MODEL_UNLOADED)
    │   ├── ModelVerifying         (UNAVAILABLE, MODEL_VERIFYING)
    │   ├── ModelQuarantined       (UNAVAILABLE, MODEL_QUARANTINED)
    │   └── DeadLettered           (UNAVAILABLE, DEAD_LETTERED)
    ├── Cancelled                  (CANCELLED, CANCELLED)
    ├── FailedPrecondition         (FAILED_PRECONDITION, FAILED_PRECONDITION)
    │   ├── IdempotencyKeyReused   (FAILED_PRECONDITION, IDEMPOTENCY_KEY_REUSED)
    │   ├── ModelVersionInUse      (FAILED_PRECONDITION, MODEL_VERSION_IN_USE)
    │   ├── ModelRejected          (FAILED_PRECONDITION, MODEL_REJECTED)
    │   ├── ModelTooLarge          (FAILED_PRECONDITION, MODEL_TOO_LARGE)
    │   ├── JobAlreadyFinished     (FAILED_PRECONDITION, JOB_ALREADY_FINISHED)
    │   ├── ModelNotExplainable    (FAILED_PRECONDITION, MODEL_NOT_EXPLAINABLE)
    │   ├── ExplainUnsupported     (FAILED_PRECONDITION, EXPLAIN_UNSUPPORTED)
    │   └── ModelLoadFailed        (FAILED_PRECONDITION, MODEL_LOAD_FAILED)
    └── JobFailed                  (INTERNAL, JOB_FAILED)
        ├── ModelFailed            (INTERNAL, MODEL_FAILED)
        ├── ModelTimeout           (DEADLINE_EXCEEDED, MODEL_TIMEOUT)
        └── ModelCrashed           (INTERNAL, MODEL_CRASHED)

Every error a caller sees is one of these: the gateway's `classify` picks it, its interceptor
sends it as a google.rpc.Status with an ErrorInfo (domain "maas.dev"), the SDK maps it back
(`error_class_for`: by reason, else by gRPC code).

The contract is protos/maas/v1/errors.proto: its `ErrorReason` has one value per reason here,
each commented with the code and the google.rpc detail types (`detail_types`) it carries; a
test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import grpc

from maas.error_text import shown as shown  # re-exported: maas.errors is the import path
from maas.v1 import errors_pb2

# The google.rpc.ErrorInfo domain of every reason, as the contract declares it ("maas.dev").
ERROR_DOMAIN: str = errors_pb2.ErrorReason.DESCRIPTOR.GetOptions().Extensions[
    errors_pb2.error_domain]

# The google.rpc detail types a status may carry (ErrorInfo always).
_INFO: tuple[str, ...] = ("ErrorInfo",)
_BAD_REQUEST: tuple[str, ...] = ("ErrorInfo", "BadRequest")
_RETRY: tuple[str, ...] = ("ErrorInfo", "RetryInfo")

@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, as google.rpc.BadRequest spells it."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota, as google.rpc.QuotaFailure spells it."""

    subject: str
    description: str


class MaasError(Exception):
    """Root of every maas error."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    detail_types: tuple[str, ...] = _INFO  # what the status carries, as errors.proto says

    def __init__(self, message: str, *, reason: str | None = None,
                 violations: tuple[FieldViolation, ...] = (), retry_delay_s: float | None = None,
                 quota_violations: tuple[QuotaViolation, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.violations = violations
        self.retry_delay_s = retry_delay_s
        self.quota_violations = quota_violations

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidArgument(MaasError):
    """The request is malformed; the violations name the fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"
    detail_types = _BAD_REQUEST


class ArchiveNotAllowed(InvalidArgument):
    """An uploaded archive uses operators outside the allowlist (see README, Security)."""

    reason = "ARCHIVE_NOT_ALLOWED"


class InvalidArchive(InvalidArgument):
    """An uploaded archive is not a usable exported model."""

    reason = "INVALID_ARCHIVE"


class InvalidWeights(InvalidArgument):
    """The weights are not a valid safetensors file."""

    reason = "INVALID_WEIGHTS"


class WeightsMismatch(InvalidArgument):
    """The weights do not fit the architecture (names, shapes or dtypes)."""

    reason = "WEIGHTS_MISMATCH"


class UnknownArchitecture(InvalidArgument):
    """No architecture of that name is registered."""

    reason = "UNKNOWN_ARCHITECTURE"


class NotFound(MaasError):
    """Something the request names does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class ModelNotFound(NotFound):
    """No model of that name."""

    reason = "MODEL_NOT_FOUND"


class ModelVersionNotFound(NotFound):
    """The model exists, that version does not."""

    reason = "MODEL_VERSION_NOT_FOUND"


class ModelAliasNotFound(ModelVersionNotFound):
    """The model has no alias of that name."""

    reason = "MODEL_ALIAS_NOT_FOUND"


class JobNotFound(NotFound):
    """No inference job of that id (or its result expired)."""

    reason = "JOB_NOT_FOUND"


class TrainingJobNotFound(NotFound):
    """No training job of that id (another tenant's is as unknown)."""

    reason = "TRAINING_JOB_NOT_FOUND"


class DatasetNotFound(NotFound):
    """No dataset of that name, uploaded or built in."""

    reason = "DATASET_NOT_FOUND"


class ApiKeyNotFound(NotFound):
    """No API key with that id."""

    reason = "API_KEY_NOT_FOUND"


class ResourceExhausted(MaasError):
    """A resource ran out (gRPC's own refusal of an oversized message, too)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class MessageTooLarge(ResourceExhausted):
    """A request or response is larger than the configured message limit."""

    reason = "MESSAGE_TOO_LARGE"


class TooManyElements(MessageTooLarge):
    """A request's tensors hold more elements than MAAS_MAX_TENSOR_ELEMENTS allows."""

    reason = "TOO_MANY_ELEMENTS"


class QuotaExceeded(ResourceExhausted):
    """The tenant used up its quota (e.g. MAAS_TENANT_RATE_PER_S); retry after the delay."""

    reason = "QUOTA_EXCEEDED"
    detail_types = ("ErrorInfo", "QuotaFailure", "RetryInfo")


class Unauthenticated(MaasError):
    """No API key, or one that is unknown or revoked."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(MaasError):
    """The API key is valid but lacks the scope the call needs."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class QueueStorageFull(ResourceExhausted):
    """Redis reached maxmemory (noeviction): new work is refused until there is room."""

    reason = "QUEUE_STORAGE_FULL"
    detail_types = _RETRY


class DeadlineExceeded(MaasError):
    """The caller's deadline passed before the job could run."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Unavailable(MaasError):
    """Transient: Redis unreachable, queue full, server draining. Retry after a delay."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"
    detail_types = _RETRY


class QueueFull(Unavailable):
    """A model's queue holds MAAS_MAX_QUEUE_DEPTH jobs of the request's priority: retry shortly."""

    reason = "QUEUE_FULL"


class NoLiveWorker(Unavailable):
    """No worker has been alive lately (MAAS_REQUIRE_LIVE_WORKER): start one and retry."""

    reason = "NO_LIVE_WORKER"


class NoWorkerForModel(Unavailable):
    """Workers are alive but none serves the model (MAAS_WORKER_MODELS)."""

    reason = "NO_WORKER_FOR_MODEL"


class QueueUnreachable(Unavailable):
    """The queue (Redis) did not answer within the call's deadline."""

    reason = "QUEUE_UNREACHABLE"


class ModelUnloaded(Unavailable):
    """The model was unloaded (RepositoryModelUnload); RepositoryModelLoad serves it again."""

    reason = "MODEL_UNLOADED"
    detail_types = _INFO


class ModelVerifying(Unavailable):
    """The version is an archive still being verified; it serves once it passes."""

    reason = "MODEL_VERIFYING"
    detail_types = _INFO


class ModelQuarantined(Unavailable):
    """The version timed out or crashed its sandbox too often and serves no inference."""

    reason = "MODEL_QUARANTINED"
    detail_types = _INFO


class DeadLettered(Unavailable):
    """Every attempt at the job died with its worker (MAAS_MAX_ATTEMPTS); it was
    dead-lettered and can be re-driven (QueueService.RedriveDeadLetters)."""

    reason = "DEAD_LETTERED"
    detail_types = _INFO


class Cancelled(MaasError):
    """The job was cancelled."""

    code = grpc.StatusCode.CANCELLED
    reason = "CANCELLED"


class FailedPrecondition(MaasError):
    """The system is not in the state the request needs; do not retry as is."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"
    detail_types = _BAD_REQUEST


class IdempotencyKeyReused(FailedPrecondition):
    """The same request id came earlier with a different request body."""

    reason = "IDEMPOTENCY_KEY_REUSED"
    detail_types = _INFO


class ModelVersionInUse(FailedPrecondition):
    """The version cannot be deleted: an alias points to it, or it is the only one."""

    reason = "MODEL_VERSION_IN_USE"
    detail_types = _INFO


class ModelRejected(FailedPrecondition):
    """The version is an archive that verification refused; it never serves."""

    reason = "MODEL_REJECTED"
    detail_types = _INFO


class ModelTooLarge(FailedPrecondition):
    """The version is larger than a worker's whole model memory (MAAS_WORKER_MODEL_MEMORY_MB):
    the worker refuses to load it rather than run out of memory."""

    reason = "MODEL_TOO_LARGE"
    detail_types = _INFO


class JobAlreadyFinished(FailedPrecondition):
    """The job already ended: only a queued or running job can be cancelled."""

    reason = "JOB_ALREADY_FINISHED"
    detail_types = _INFO


class ModelNotExplainable(FailedPrecondition):
    """The model's inputs or outputs leave nothing to attribute an explanation through."""

    reason = "MODEL_NOT_EXPLAINABLE"
    detail_types = _INFO


class ExplainUnsupported(FailedPrecondition):
    """Explanations are not available for this kind of model (uploaded archives)."""

    reason = "EXPLAIN_UNSUPPORTED"
    detail_types = _INFO


class ModelLoadFailed(FailedPrecondition):
    """The worker could not load the model."""

    reason = "MODEL_LOAD_FAILED"
    detail_types = _INFO


class JobFailed(MaasError):
    """The job ran and failed."""

    code = grpc.StatusCode.INTERNAL
    reason = "JOB_FAILED"


class ModelFailed(JobFailed):
    """The model raised during the forward."""

    reason = "MODEL_FAILED"


class ModelTimeout(JobFailed):
    """An uploaded model's forward ran past MAAS_MAX_FORWARD_MS; its sandbox was killed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "MODEL_TIMEOUT"


class ModelCrashed(JobFailed):
    """An uploaded model's sandboxed runner died during the forward."""

    reason = "MODEL_CRASHED"


def _all_subclasses(cls: type[MaasError]) -> list[type[MaasError]]:
    return [f for sub in cls.__subclasses__() for f in (sub, *_all_subclasses(sub))]


# Every class of the tree by its reason: the SDK's lookup (one value per ErrorReason).
_TREE: list[type[MaasError]] = [MaasError, *_all_subclasses(MaasError)]
BY_REASON: Mapping[str, type[MaasError]] = MappingProxyType({cls.reason: cls for cls in _TREE})
# The class of each gRPC code itself (NotFound for NOT_FOUND): a reason this SDK does not
# know yet (from a newer server) still gives the class of its code.
_BY_CODE = {code: cls for code in grpc.StatusCode
            if (cls := BY_REASON.get(code.name)) is not None and cls.code == code}


def error_class_for(code: grpc.StatusCode, reason: str) -> type[MaasError]:
    """The class of `reason`; else the class of the code itself (NotFound for NOT_FOUND and
    any reason); else MaasError (whose instance then carries the code it came with)."""
    return BY_REASON.get(reason) or _BY_CODE.get(code, MaasError)


def by_code_name(code_name: str, message: str, reason: str) -> MaasError:
    """Rebuilds an error that crossed a process as (code name, reason, message) data."""
    code = getattr(grpc.StatusCode, code_name, grpc.StatusCode.INTERNAL)
    cls = error_class_for(code, reason)  # no reason given: the code's name (as from_rpc_error)
    err = cls(message, reason=reason or code.name)
    if cls is MaasError:
        err.code = code
    return err
