"""The torch module of the generative architecture `gpt`: a decoder-only Transformer.

Token embedding + learned positions → N pre-norm blocks (causal self-attention, GELU
feed-forward) → final LayerNorm → an untied linear head over the vocabulary. Three ways in:

- `forward(tokens [B, T])` → logits [B, T, vocab_size] at every position (training);
  with `lengths` [B] it returns the logits at each row's last real position [B, vocab_size]
  (what a plain ModelInfer of tokens + lengths gets: next-token logits).
- `prefill(tokens [T])` → (logits [vocab_size] at the last position, that sequence's KVCache).
- `decode(tokens [B], caches)` → logits [B, vocab_size] of the next token of B sequences whose
  caches may differ in length; each token's keys and values are appended to its cache.

All three compute attention the same way (scores, mask, softmax), so a decoded token's logits
equal forward()'s on the whole sequence up to float rounding. The device is the parameters'.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

KV = tuple[torch.Tensor, torch.Tensor]  # keys, values of one layer: each [heads, t, d_head]


class KVCache:
    """One sequence's keys and values, per layer (k, v) each [heads, t, d_head]; len = t."""

    def __init__(self, layers: list[KV] | None = None) -> None:
        self.layers: list[KV] = layers or []

    def __len__(self) -> int:
        return int(self.layers[0][0].shape[1]) if self.layers else 0


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            allowed: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v over the allowed keys: q [B, H, Tq, D], k and v
    [B, H, Tk, D], allowed broadcastable to [B, H, Tq, Tk]."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class Block(nn.Module):
    """x + attention(norm1(x)), then x + feed_forward(norm2(x))."""

    def __init__(self, d_model: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, ff)
        self.ff2 = nn.Linear(ff, d_model)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of x [B, T, d] as [B, H, T, d_head] each."""
        batch, steps, width = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, steps, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def _finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        batch, _, steps, _ = attended.shape
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, steps, -1))
        return x + self.ff2(F.gelu(self.ff1(self.norm2(x))))  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, KV]:
        """Causal attention over x [B, T, d]; also this layer's (k, v) [B, H, T, d_head]."""
        q, k, v = self._heads(x)
        steps = x.shape[1]
        causal = torch.ones(steps, steps, dtype=torch.bool, device=x.device).tril()
        return self._finish(x, _attend(q, k, v, causal)), (k, v)

    def step(self, x: torch.Tensor, caches: list[KVCache], layer: int,
             allowed: torch.Tensor) -> torch.Tensor:
        """One new position per sequence, x [B, 1, d]: its k, v appended to each cache, then
        attention over each cache, padded to the longest (`allowed` [B, 1, 1, Tmax]: the
        positions each sequence has)."""
        q, k, v = self._heads(x)
        for row, cache in enumerate(caches):
            old_k, old_v = cache.layers[layer]
            cache.layers[layer] = (torch.cat([old_k, k[row]], dim=1),
                                   torch.cat([old_v, v[row]], dim=1))
        keys = pad_sequence([c.layers[layer][0].transpose(0, 1) for c in caches],
                            batch_first=True).transpose(1, 2)  # [B, H, Tmax, d_head]
        values = pad_sequence([c.layers[layer][1].transpose(0, 1) for c in caches],
                              batch_first=True).transpose(1, 2)
        return self._finish(x, _attend(q, keys, values, allowed))


class GPT(nn.Module):
    """Decoder-only Transformer over token ids 0..vocab_size-1 (see the module docstring)."""

    def __init__(self, vocab_size: int, d_model: int, heads: int, layers: int, ff: int,
                 max_len: int) -> None:
        super().__init__()
        self.vocab_size, self.max_len = vocab_size, max_len
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, ff) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    @property
    def _device(self) -> torch.device:
        return self.embedding.weight.device

    def _run(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[KV]]:
        """Logits [B, T, V] of tokens [B, T] and every layer's (k, v)."""
        tokens = tokens.to(self._device).long()
        steps = tokens.shape[1]
        if steps > self.max_len:
            raise ValueError(f"sequences of {steps} tokens exceed max_len {self.max_len}")
        x = self.embedding(tokens) + self.positions(torch.arange(steps, device=self._device))
        kvs = []
        for block in self.blocks:
            x, kv = block(x)
            kvs.append(kv)
        return self.head(self.norm(x)), kvs

    def forward(self, tokens: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Causal logits [B, T, vocab_size]; with lengths [B], those at each row's last real
        position [B, vocab_size] (positions past a row's length never change it)."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [B, T]; got {list(tokens.shape)}")
        logits, _ = self._run(tokens)
        if lengths is None:
            return logits
        last = lengths.to(self._device).long().clamp(1, max(tokens.shape[1], 1)) - 1
        return logits[torch.arange(len(logits), device=self._device), last]

    def prefill(self, tokens: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        """tokens [T] of one sequence → (logits [vocab_size] at its last position, its cache)."""
        if tokens.dim() != 1 or not len(tokens):
            raise ValueError(f"prefill takes one non-empty sequence [T]; got "
                             f"{list(tokens.shape)}")
        logits, kvs = self._run(tokens[None, :])
        # Copies: views would keep each layer's whole q/k/v projection alive.
        return logits[0, -1], KVCache([(k[0].contiguous(), v[0].contiguous()) for k, v in kvs])

    def decode(self, tokens: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """tokens [B]: the next token of B sequences → logits [B, vocab_size]; each token's
        keys and values are appended to its cache (in place)."""
        if tokens.dim() != 1 or len(tokens) != len(caches) or not caches:
            raise ValueError(f"decode takes tokens [B] and B caches; got {list(tokens.shape)} "
                             f"and {len(caches)}")
        held = [len(c) for c in caches]
        if min(held) < 1 or max(held) >= self.max_len:
            raise ValueError(f"caches must hold 1..{self.max_len - 1} tokens (max_len "
                             f"{self.max_len}); got {held}")
        at = torch.tensor(held, device=self._device)  # each new token's position
        allowed = torch.arange(max(held) + 1, device=self._device)[None, :] <= at[:, None]
        x = (self.embedding(tokens.to(self._device).long()) + self.positions(at))[:, None, :]
        for layer, block in enumerate(self.blocks):
            assert isinstance(block, Block)
            x = block.step(x, caches, layer, allowed[:, None, None, :])
        return self.head(self.norm(x[:, 0]))  # type: ignore[no-any-return]
