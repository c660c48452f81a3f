"""Byte-level tokens of the generative architecture `gpt`, in pure Python (no torch): ids
0..255 are the bytes of UTF-8 text, then three specials. A gpt model's vocab_size is at
least VOCAB_MIN, so every id below it has a row in the embedding."""

from __future__ import annotations

from collections.abc import Iterable

BOS = 256  # begins every sequence
EOS = 257  # ends a generation
PAD = 258  # fills a row past its length (never attended to: the model is causal)
VOCAB_MIN = 259


def encode(text: str) -> list[int]:
    """The UTF-8 bytes of `text` as token ids (no BOS or EOS)."""
    return list(text.encode("utf-8"))


def decode(ids: Iterable[int]) -> str:
    """The text of byte ids; ids >= 256 (specials) are dropped, bad UTF-8 replaced."""
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")
