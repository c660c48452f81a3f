"""What a model id, a model name, a version number and an alias may be, and how errors
show them (a tenant sees its model's name, never another tenant's id)."""

from __future__ import annotations

import re

from maas.errors import FieldViolation, InvalidArgument, shown
from scheduler import keys

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ID = re.compile(rf"(?:{_NAME.pattern}/)?{_NAME.pattern}")
_VERSION = re.compile(r"[1-9][0-9]{0,18}")  # versions are 1, 2, 3, ...
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")  # never a number: versions are
RESERVED_ALIASES = frozenset({"latest"})  # what an empty version means; not settable
MAX_VERSIONS_SHOWN = 10


def check_model_name(name: str, field: str = "name") -> None:
    """INVALID_ARGUMENT (violation on `field`) unless `name` can be a model's name."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"model name {shown(name)} is not valid: use 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit",
            violations=(FieldViolation(field, "invalid model name"),))


def check_model_id(model_id: str, field: str = "model_name") -> None:
    """As check_model_name, for an id (`<tenant>/<name>` or `<name>`)."""
    if not _ID.fullmatch(model_id):
        check_model_name(model_id.rpartition("/")[2], field)
        check_model_name(model_id, field)  # a tenant part that no tenant can have


def is_alias(name: str) -> bool:
    return bool(_ALIAS.fullmatch(name)) and name not in RESERVED_ALIASES


def check_alias(alias: str, field: str = "alias") -> None:
    """INVALID_ARGUMENT (violation on `field`) unless `alias` can name an alias."""
    if not is_alias(alias):
        raise InvalidArgument(
            f"alias {shown(alias)} is not valid: use a letter, then up to 62 letters, digits, "
            "'-' or '_' (not 'latest')", violations=(FieldViolation(field, "invalid alias"),))


def _shown(model_id: str) -> str:
    """An id as its owner knows it: the name, without the tenant."""
    return repr(keys.split_model_id(model_id)[1])


def _listed(versions: list[str]) -> str:
    if len(versions) <= MAX_VERSIONS_SHOWN:
        return ", ".join(versions)
    half = MAX_VERSIONS_SHOWN // 2
    return f"{', '.join(versions[:half])}, …, {', '.join(versions[-half:])}"
