"""torch modules of the sequence architectures `rnn` and `transformer`.

Both take `tokens` [B, T] (int64 ids, padded with anything past each row's length) and
`lengths` [B] (1..T), and return logits [B, num_classes]. Padding never reaches the
result: the RNN reads packed sequences, the Transformer masks padded keys and pools the
real positions only, so a padded row gives the logits of the unpadded one. The token
embedding is the submodule `embedding` (attribution methods hook it).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


def _clean(tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 ids, and lengths clamped to 1..T (the gateway already refuses any other; an
    in-process caller with float tensors or a zero length still gets an answer)."""
    if tokens.dim() != 2 or lengths.shape != tokens.shape[:1]:
        raise ValueError(f"tokens must be [B, T] and lengths [B]; got {list(tokens.shape)} "
                         f"and {list(lengths.shape)}")
    return tokens.long(), lengths.long().clamp(1, max(tokens.shape[1], 1))


class RNNClassifier(nn.Module):
    """embedding → LSTM or GRU over the packed sequence → linear head on the last layer's
    final hidden state (taken at each row's own length)."""

    def __init__(self, cell: str, vocab_size: int, embed_dim: int, hidden: int, layers: int,
                 num_classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        rnn_class = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_class(embed_dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        tokens, lengths = _clean(tokens, lengths)
        packed = pack_padded_sequence(self.embedding(tokens), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, state = self.rnn(packed)
        final = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
        return self.head(final[-1])  # type: ignore[no-any-return]


def sinusoid_table(max_len: int, d_model: int) -> torch.Tensor:
    """[max_len, d_model] sine/cosine positional encodings (Vaswani et al. 2017)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    rates = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                      * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates[: d_model // 2])
    return table


class TransformerClassifier(nn.Module):
    """embedding x sqrt(d_model) + sinusoidal positions → N post-norm encoder layers with a
    key padding mask → mean over the real positions → linear head."""

    positions: torch.Tensor  # a buffer, not in the state dict

    def __init__(self, vocab_size: int, d_model: int, heads: int, layers: int, ff: int,
                 max_len: int, num_classes: int) -> None:
        super().__init__()
        self.scale = math.sqrt(d_model)
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.register_buffer("positions", sinusoid_table(max_len, d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True)
        # No nested tensors: their output drops trailing all-padding columns.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        tokens, lengths = _clean(tokens, lengths)
        steps = tokens.shape[1]
        if steps > self.positions.shape[0]:
            raise ValueError(f"sequences of {steps} tokens exceed max_len "
                             f"{self.positions.shape[0]}")
        padding = torch.arange(steps, device=tokens.device)[None, :] >= lengths[:, None]
        x = self.embedding(tokens) * self.scale + self.positions[:steps]
        hidden = self.encoder(x, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * keep).sum(dim=1) / keep.sum(dim=1)
        return self.head(pooled)  # type: ignore[no-any-return]
