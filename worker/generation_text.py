"""The text of one generation as its byte tokens arrive: UTF-8 decoded incrementally, cut at
the first stop string, and held back while it could still become one.

What `push` returns, concatenated, is always a prefix of the final `text`: a character is
sent once its bytes are complete and no stop string can start at or before it unless it
is known not to match. So a caller that missed some pushes can catch up from the final text.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

BYTE_TOKENS = 256  # ids 0..255 are bytes; the rest are specials and have no text


class TextStream:
    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self.text = ""  # decoded so far (cut at a stop once one matched)
        self._sent = 0  # characters of `text` handed out
        self.matched = ""  # the stop string that ended the text

    def push(self, token_id: int) -> str:
        """Adds a token; returns the text that became safe to send (maybe "")."""
        if token_id < BYTE_TOKENS:
            self.text += self._decoder.decode(bytes((token_id,)))
        return self._release(final=False)

    def finish(self) -> str:
        """The generation ended without a stop string: everything held back is sent (an
        incomplete character as U+FFFD)."""
        if not self.matched:
            self.text += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        if not self.matched:
            self._cut_at_stop()
        safe = len(self.text) if final or self.matched else len(self.text) - self._held()
        delta = self.text[self._sent:max(safe, self._sent)]
        self._sent = max(safe, self._sent)
        return delta

    def _cut_at_stop(self) -> None:
        """Cuts `text` before the earliest stop string found (searching only where a new
        one could be: the unsent tail)."""
        longest = max((len(s) for s in self._stop), default=0)
        start = max(0, self._sent - longest)
        found = [(i, s) for s in self._stop if (i := self.text.find(s, start)) >= 0]
        if found:
            at, stop = min(found)
            self.text, self.matched = self.text[:at], stop
            self._sent = min(self._sent, at)

    def _held(self) -> int:
        """How many trailing characters could still begin a stop string."""
        held = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(self.text)), held, -1):
                if self.text.endswith(stop[:n]):
                    held = n
                    break
        return held
