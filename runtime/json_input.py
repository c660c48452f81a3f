"""JSON a client sent (configs, specs, safetensors headers): parsed so that every failure is
INVALID_ARGUMENT naming the field.

`json.loads` raises more than JSONDecodeError on hostile text: RecursionError for
`[[[[…` nested past the interpreter's limit, ValueError for an integer of over 4,300
digits. Uncaught, either would surface as INTERNAL.
"""

from __future__ import annotations

import json
from typing import Any

from maas.errors import FieldViolation, InvalidArgument


def parse_json(text: str | bytes, field: str, *, what: str = "",
               max_bytes: int | None = None) -> Any:
    """The value of `text`; INVALID_ARGUMENT (violation on `field`) when it is longer than
    `max_bytes` or is not JSON. `what` names the text in the message (default: `field`)."""
    what = what or field
    size = len(text.encode(errors="replace") if isinstance(text, str) else text)
    if max_bytes is not None and size > max_bytes:
        why = f"is {size} bytes, more than the {max_bytes} allowed"
        raise InvalidArgument(f"{what} {why}", violations=(FieldViolation(field, why),))
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        why = f"not valid JSON ({str(exc)[:200]})"
        raise InvalidArgument(f"{what} is {why}",
                              violations=(FieldViolation(field, why),)) from None
