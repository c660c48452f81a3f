"""The one error tree of maas. Each error carries its gRPC code and a stable reason.

    MaasError                      (INTERNAL, INTERNAL)
    ├── InvalidArgument            (INVALID_ARGUMENT, INVALID_ARGUMENT) + field violations
    ├── NotFound                   (NOT_FOUND, NOT_FOUND)
    │   ├── ModelNotFound          (NOT_FOUND, MODEL_NOT_FOUND)
    │   ├── ModelVersionNotFound   (NOT_FOUND, MODEL_VERSION_NOT_FOUND)
    │   │   └── ModelAliasNotFound (NOT_FOUND, MODEL_ALIAS_NOT_FOUND)
    │   ├── JobNotFound            (NOT_FOUND, JOB_NOT_FOUND)
    │   ├── TrainingJobNotFound    (NOT_FOUND, TRAINING_JOB_NOT_FOUND)
    │   ├── DatasetNotFound        (NOT_FOUND, DATASET_NOT_FOUND)
    │   └── ApiKeyNotFound         (NOT_FOUND, API_KEY_NOT_FOUND)
    ├── MessageTooLarge            (RESOURCE_EXHAUSTED, MESSAGE_TOO_LARGE)
    │   └── TooManyElements        (RESOURCE_EXHAUSTED, TOO_MANY_ELEMENTS)
    ├── QuotaExceeded              (RESOURCE_EXHAUSTED, QUOTA_EXCEEDED) + quota violations
    ├── Unauthenticated            (UNAUTHENTICATED, UNAUTHENTICATED)
    ├── PermissionDenied           (PERMISSION_DENIED, PERMISSION_DENIED)
    ├── QueueStorageFull           (RESOURCE_EXHAUSTED, QUEUE_STORAGE_FULL)
    ├── DeadlineExceeded           (DEADLINE_EXCEEDED, DEADLINE_EXCEEDED)
    ├── Unavailable                (UNAVAILABLE, UNAVAILABLE) + retry delay
    │   ├── QueueFull              (UNAVAILABLE, QUEUE_FULL)
    │   ├── ModelUnloaded          (UNAVAILABLE, MODEL_UNLOADED)
    │   ├── ModelVerifying         (UNAVAILABLE, MODEL_VERIFYING)
    │   └── ModelQuarantined       (UNAVAILABLE, MODEL_QUARANTINED)
    ├── Cancelled                  (CANCELLED, CANCELLED)
    ├── FailedPrecondition         (FAILED_PRECONDITION, FAILED_PRECONDITION)
    │   ├── IdempotencyKeyReused   (FAILED_PRECONDITION, IDEMPOTENCY_KEY_REUSED)
    │   ├── ModelVersionInUse      (FAILED_PRECONDITION, MODEL_VERSION_IN_USE)
    │   ├── ModelRejected          (FAILED_PRECONDITION, MODEL_REJECTED)
    │   └── ModelTooLarge          (FAILED_PRECONDITION, MODEL_TOO_LARGE)
    └── JobFailed                  (INTERNAL, JOB_FAILED)
        ├── ModelTimeout           (DEADLINE_EXCEEDED, MODEL_TIMEOUT)
        └── ModelCrashed           (INTERNAL, MODEL_CRASHED)

Every error a caller sees is one of these: the gateway's `classify` picks it, its interceptor
sends it as a google.rpc.Status with an ErrorInfo (domain "maas.dev"), the SDK maps it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from maas.error_text import shown as shown  # re-exported: maas.errors is the import path

ERROR_DOMAIN = "maas.dev"

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


class MessageTooLarge(MaasError):
    """A request or response is larger than the configured message limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "MESSAGE_TOO_LARGE"


class TooManyElements(MessageTooLarge):
    """A request's tensors hold more elements than MAAS_MAX_TENSOR_ELEMENTS allows."""

    reason = "TOO_MANY_ELEMENTS"


class QuotaExceeded(MaasError):
    """The tenant used up its quota (e.g. MAAS_TENANT_RATE_PER_S); retry after the delay."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "QUOTA_EXCEEDED"


class Unauthenticated(MaasError):
    """No API key, or one that is unknown or revoked."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(MaasError):
    """The API key is valid but lacks the scope the call needs."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class QueueStorageFull(MaasError):
    """Redis reached maxmemory (noeviction): new work is refused until there is room."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "QUEUE_STORAGE_FULL"


class DeadlineExceeded(MaasError):
    """The caller's deadline passed before the job could run."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Unavailable(MaasError):
    """Transient: Redis unreachable, queue full, server draining. Retry after a delay."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class QueueFull(Unavailable):
    """A model's queue holds MAAS_MAX_QUEUE_DEPTH jobs of the request's priority: retry shortly."""

    reason = "QUEUE_FULL"


class ModelUnloaded(Unavailable):
    """The model was unloaded (RepositoryModelUnload); RepositoryModelLoad serves it again."""

    reason = "MODEL_UNLOADED"


class ModelVerifying(Unavailable):
    """The version is an archive still being verified; it serves once it passes."""

    reason = "MODEL_VERIFYING"


class ModelQuarantined(Unavailable):
    """The version timed out or crashed its sandbox too often and serves no inference."""

    reason = "MODEL_QUARANTINED"


class Cancelled(MaasError):
    """The job was cancelled."""

    code = grpc.StatusCode.CANCELLED
    reason = "CANCELLED"


class FailedPrecondition(MaasError):
    """The system is not in the state the request needs; do not retry as is."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class IdempotencyKeyReused(FailedPrecondition):
    """The same request id came earlier with a different request body."""

    reason = "IDEMPOTENCY_KEY_REUSED"


class ModelVersionInUse(FailedPrecondition):
    """The version cannot be deleted: an alias points to it, or it is the only one."""

    reason = "MODEL_VERSION_IN_USE"


class ModelRejected(FailedPrecondition):
    """The version is an archive that verification refused; it never serves."""

    reason = "MODEL_REJECTED"


class ModelTooLarge(FailedPrecondition):
    """The version is larger than a worker's whole model memory (MAAS_WORKER_MODEL_MEMORY_MB):
    the worker refuses to load it rather than run out of memory."""

    reason = "MODEL_TOO_LARGE"


class JobFailed(MaasError):
    """The job ran and failed (the model raised, or every attempt died)."""

    code = grpc.StatusCode.INTERNAL
    reason = "JOB_FAILED"


class ModelTimeout(JobFailed):
    """An uploaded model's forward ran past MAAS_MAX_FORWARD_MS; its sandbox was killed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "MODEL_TIMEOUT"


class ModelCrashed(JobFailed):
    """An uploaded model's sandboxed runner died during the forward."""

    reason = "MODEL_CRASHED"


def _all_subclasses(cls: type[MaasError]) -> list[type[MaasError]]:
    return [f for sub in cls.__subclasses__() for f in (sub, *_all_subclasses(sub))]


def error_class_for(code: grpc.StatusCode, reason: str) -> type[MaasError]:
    """The class of `reason`; else the class of the code itself (NotFound for NOT_FOUND and
    any reason); else MaasError."""
    classes = _all_subclasses(MaasError)
    by_reason = next((cls for cls in classes if cls.reason == reason), None)
    return by_reason or next(
        (cls for cls in classes if cls.code == code and cls.reason == code.name), MaasError)


def by_code_name(code_name: str, message: str, reason: str) -> MaasError:
    """Rebuilds an error that crossed a process as (code name, reason, message) data."""
    code = getattr(grpc.StatusCode, code_name, grpc.StatusCode.INTERNAL)
    cls = error_class_for(code, reason)  # no reason given: the code's name (as from_rpc_error)
    err = cls(message, reason=reason or code.name)
    if cls is MaasError:
        err.code = code
    return err
