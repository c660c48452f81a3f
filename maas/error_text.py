"""How a value from a request is shown in an error message: cut short, never whole."""

from __future__ import annotations

import reprlib

# Long user-supplied text must not reach a message whole: statuses travel in gRPC trailers,
# which a peer refuses past 8-16 KiB (the client then sees RESOURCE_EXHAUSTED instead).
_SHORT = reprlib.Repr()
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 64


def shown(value: object, limit: int = 64) -> str:
    """The repr of a value from a request, cut short to fit in an error message.

    A string over `limit` characters keeps its start and says how long it was:
    `'xxxx'… (10000 characters)`; other values are shortened by `reprlib`.
    """
    if not isinstance(value, str):
        return _SHORT.repr(value)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"
