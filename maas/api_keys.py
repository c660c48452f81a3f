"""API keys, shared by the gateway (which checks them) and the CLI (which makes them).

A key reads `maas_<key_id>_<secret>`: 16 hex digits of public id, then 64 of secret.
Redis stores only its sha256 (scheduler/auth.py). Each key is bound to one tenant and to
scopes: `infer`, `train`, `admin`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

from maas.errors import FieldViolation, InvalidArgument, shown

SCOPES = ("infer", "train", "admin")
_KEY = re.compile(r"maas_([0-9a-f]{16})_[0-9a-f]{64}")
# Tenant names follow model names, so `<tenant>/<name>` splits at its one '/'.
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def new_api_key() -> str:
    """A fresh random key."""
    return f"maas_{secrets.token_hex(8)}_{secrets.token_hex(32)}"


def key_id_of(api_key: str) -> str | None:
    """The public id of a well-formed key; None for anything else."""
    found = _KEY.fullmatch(api_key)
    return found.group(1) if found else None


def key_sha256(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def check_tenant(tenant: str, field: str = "tenant") -> None:
    """INVALID_ARGUMENT unless `tenant` can name a tenant."""
    if not _TENANT.fullmatch(tenant):
        raise InvalidArgument(
            f"tenant {shown(tenant)} is not valid: use 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit", violations=(FieldViolation(field, "invalid"),))


def check_scopes(scopes: list[str] | tuple[str, ...], field: str = "scopes") -> tuple[str, ...]:
    """The scopes, deduplicated in canonical order; INVALID_ARGUMENT for unknown or none."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        why = f"unknown scopes {[shown(s) for s in unknown[:4]]}" if unknown else "none given"
        raise InvalidArgument(f"{field}: {why}; use any of {', '.join(SCOPES)}",
                              violations=(FieldViolation(field, why),))
    return tuple(s for s in SCOPES if s in scopes)


def read_key_file(path: str) -> str:
    """The key in a file (one line); ValueError naming the file when it holds none."""
    with open(path) as f:
        key = f.read().strip()
    if key_id_of(key) is None:
        raise ValueError(f"{path} does not hold a maas API key (maas_<16 hex>_<64 hex>); "
                         "make one with `maas keys generate`")
    return key


def ensure_key_file(path: Path) -> str:
    """The key in `path`; a new one written there (mode 0600) when the file does not exist."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_api_key() + "\n")
    path.chmod(0o600)
    return read_key_file(str(path))
