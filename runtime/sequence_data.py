"""The built-in sequence datasets: generated from a fixed seed (no downloads, same bytes on
every machine), each a task a model has to learn from the order or the counts of tokens.

Every generator returns (tokens [N, T] int64, lengths [N] int64, labels [N] int64); row i's
real tokens are its first lengths[i]. In `parity` and `majority` token 0 is padding only (it
never occurs inside a sequence) and labels are classes; `addition` is byte text for the
generative `gpt` (padding PAD, labels the prompt lengths). The accuracy targets are what the
models reach in a few seconds or minutes on 2 CPU cores (docs/training.md "Architectures and
datasets"; tests/e2e/test_sequence_models.py, tests/e2e/test_gpt_addition.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from runtime import gpt_tokens

IntArray = npt.NDArray[np.int64]
Sequences = tuple[IntArray, IntArray, IntArray]

PARITY_SAMPLES, PARITY_STEPS, PARITY_MIN_LENGTH = 2000, 20, 1
MAJORITY_SAMPLES, MAJORITY_STEPS, MAJORITY_MIN_LENGTH = 2000, 32, 8
MAJORITY_VOCAB, MAJORITY_CLASSES = 16, 4
ADDITION_LIMIT = 100  # addends are 0..ADDITION_LIMIT-1
_SEED = 20240806  # fixed: the built-in datasets never change (their sha256 is published)


def _lengths(rng: np.random.Generator, n: int, low: int, steps: int) -> IntArray:
    return rng.integers(low, steps + 1, n, dtype=np.int64)


def _pad(tokens: IntArray, lengths: IntArray) -> IntArray:
    """tokens with every position at or past its row's length set to 0 (padding)."""
    real = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
    return np.where(real, tokens, 0).astype(np.int64)


def parity() -> Sequences:
    """2,000 bit strings of 6..20 tokens (1 and 2, padded to 20 with 0); label: whether the
    number of 1s is odd. Chance is 0.5; no bag-of-tokens shortcut: the count mod 2 needs
    state carried along the sequence. For `rnn` (vocab_size >= 3, num_classes >= 2)."""
    rng = np.random.default_rng(_SEED)
    lengths = _lengths(rng, PARITY_SAMPLES, PARITY_MIN_LENGTH, PARITY_STEPS)
    tokens = _pad(rng.integers(1, 3, (PARITY_SAMPLES, PARITY_STEPS), dtype=np.int64), lengths)
    labels = ((tokens == 1).sum(axis=1) % 2).astype(np.int64)
    return tokens, lengths, labels


def majority() -> Sequences:
    """2,000 sequences of 8..32 tokens drawn from 1..15 (padded to 32 with 0); label: which of
    the tokens 1, 2, 3, 4 occurs most often (rows with a tie are not drawn). Chance is about
    0.25. For `transformer` (vocab_size >= 16, num_classes >= 4)."""
    rng = np.random.default_rng(_SEED + 1)
    kept: list[IntArray] = []
    lengths_kept: list[IntArray] = []
    total = 0
    while total < MAJORITY_SAMPLES:
        lengths = _lengths(rng, MAJORITY_SAMPLES, MAJORITY_MIN_LENGTH, MAJORITY_STEPS)
        tokens = _pad(rng.integers(1, MAJORITY_VOCAB, (MAJORITY_SAMPLES, MAJORITY_STEPS),
                                   dtype=np.int64), lengths)
        counts = np.stack([(tokens == k).sum(axis=1) for k in range(1, MAJORITY_CLASSES + 1)],
                          axis=1)
        unique = (counts == counts.max(axis=1, keepdims=True)).sum(axis=1) == 1
        kept.append(tokens[unique])
        lengths_kept.append(lengths[unique])
        total += int(unique.sum())
    tokens = np.concatenate(kept)[:MAJORITY_SAMPLES]
    counts = np.stack([(tokens == k).sum(axis=1) for k in range(1, MAJORITY_CLASSES + 1)], axis=1)
    return tokens, np.concatenate(lengths_kept)[:MAJORITY_SAMPLES], counts.argmax(axis=1)


def addition() -> Sequences:
    """Every sum a+b=c of a, b in 0..99 (10,000 rows, in a fixed shuffled order), as byte
    tokens (runtime/gpt_tokens.py): BOS "17+25=" "42" EOS, padded to 11 with PAD. Label: the
    prompt's length (BOS through "="); a `gpt` learns to generate the rest, and is scored by
    the exact match of its greedy answer on held-out sums it never saw."""
    pairs = np.random.default_rng(_SEED + 2).permutation(ADDITION_LIMIT * ADDITION_LIMIT)
    rows = [_addition_row(int(p) // ADDITION_LIMIT, int(p) % ADDITION_LIMIT) for p in pairs]
    steps = max(len(tokens) for tokens, _ in rows)
    tokens = np.full((len(rows), steps), gpt_tokens.PAD, dtype=np.int64)
    for i, (row, _) in enumerate(rows):
        tokens[i, : len(row)] = row
    lengths = np.array([len(row) for row, _ in rows], dtype=np.int64)
    return tokens, lengths, np.array([prompt for _, prompt in rows], dtype=np.int64)


def _addition_row(a: int, b: int) -> tuple[list[int], int]:
    """(BOS prompt answer EOS, the prompt's length with BOS)."""
    prompt = [gpt_tokens.BOS, *gpt_tokens.encode(f"{a}+{b}=")]
    return [*prompt, *gpt_tokens.encode(str(a + b)), gpt_tokens.EOS], len(prompt)


GENERATORS: dict[str, Callable[[], Sequences]] = {"parity": parity, "majority": majority,
                                                  "addition": addition}
