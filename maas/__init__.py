"""maas: Model-as-a-Service. The SDK, the CLI and the contracts (protos, errors, API keys);
what only the servers share is in `runtime`.

`import maas` loads neither redis nor torch.
"""

from __future__ import annotations

from maas.client import AsyncClient, Client
from maas.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    MaasError,
    MessageTooLarge,
    ModelNotFound,
    ModelVersionNotFound,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    Unauthenticated,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "DeadlineExceeded",
    "FieldViolation",
    "InvalidArgument",
    "MaasError",
    "MessageTooLarge",
    "ModelNotFound",
    "ModelVersionNotFound",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]
