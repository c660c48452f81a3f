"""Bounds of the request fields that reach Redis, disk or memory: request ids (idempotency
keys live in Redis for 24 h), priorities, deadlines, pages. A value out of range is
INVALID_ARGUMENT naming its field, before any work is done, never an INTERNAL from Redis
or protobuf further down.
"""

from __future__ import annotations

import re

from maas.errors import FieldViolation, InvalidArgument, shown

MAX_REQUEST_ID_BYTES = 128
# v2's `priority` parameter and maas.v1's `priority`: 0 = default, 1 = highest, 2 = normal,
# 3 and above low (scheduler/keys.py `level_of`).
MAX_PRIORITY = 1_000_000
MAX_DEADLINE_MS = 24 * 3600 * 1000
# A page asked for larger is cut to this (AIP-158); a negative size is refused.
MAX_PAGE_SIZE = 1000
MAX_PAGE_TOKEN_CHARS = 256


def _invalid(field: str, why: str, what: str = "") -> InvalidArgument:
    return InvalidArgument(f"{what or field} {why}", violations=(FieldViolation(field, why),))


def check_request_id(value: str, field: str = "request_id") -> None:
    """A request id / idempotency key of at most MAX_REQUEST_ID_BYTES (UTF-8)."""
    if (size := len(value.encode())) > MAX_REQUEST_ID_BYTES:
        raise _invalid(field, f"is {size} bytes; at most {MAX_REQUEST_ID_BYTES} are allowed")


def check_priority(value: int, field: str = "priority", what: str = "") -> int:
    """A priority in 0..MAX_PRIORITY (0 default, 1 highest); `what` names it in the message."""
    if not 0 <= value <= MAX_PRIORITY:
        raise _invalid(field, f"must be an integer from 0 (default) to {MAX_PRIORITY} "
                              f"(1 = highest); got {shown(value)}", what)
    return value


def check_deadline_ms(value: int, field: str = "deadline_ms") -> None:
    """0 (the server's default deadline) or 1 ms .. 24 h."""
    if not 0 <= value <= MAX_DEADLINE_MS:
        raise _invalid(field, f"must be 0 (MAAS_DEFAULT_DEADLINE_S) or 1..{MAX_DEADLINE_MS} ms "
                              f"(24 h); got {value}")


def page_size(value: int, default: int, field: str = "page_size") -> int:
    """The size of a page: `default` for 0, at most MAX_PAGE_SIZE; negative is refused."""
    if value < 0:
        raise _invalid(field, f"must be >= 0 (0 = {default}); got {value}")
    return min(value or default, MAX_PAGE_SIZE)


def check_page_token(token: str, pattern: re.Pattern[str], field: str = "page_token") -> None:
    """A token as this server hands them out (`pattern`), or empty for the first page."""
    if token and (len(token) > MAX_PAGE_TOKEN_CHARS or not pattern.fullmatch(token)):
        raise _invalid(field, f"{shown(token)} is not a token this server gave out (pass a "
                              "response's next_page_token, or empty for the first page)")
