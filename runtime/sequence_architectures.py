"""The sequence architectures `rnn` (LSTM/GRU) and `transformer`: tokens [B, T] + lengths [B]
→ logits [B, num_classes]. Their metadata, parameter shapes and counts and the gateway's
checks of token ids and lengths, in pure Python; torch only to build (runtime/sequence_nn.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from maas.errors import FieldViolation
from runtime.architecture_spec import Architecture, Config, InputProblem, Shapes, TensorSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

# Most values of a transformer's sinusoidal position table (max_len x d_model, float32: 64 MiB),
# a buffer the worker allocates that no parameter count shows.
MAX_POSITION_TABLE = 1 << 24


def sequence_inputs(c: Config) -> list[TensorSpec]:
    return [TensorSpec("tokens", "INT64", (-1, -1)), TensorSpec("lengths", "INT64", (-1,))]


def _sequence_logits(c: Config) -> list[TensorSpec]:
    return [TensorSpec("logits", "FP32", (-1, c["num_classes"]))]


def _rnn_param_shapes(c: Config) -> Shapes:
    gates = 4 if c["cell"] == "lstm" else 3
    shapes: Shapes = {"embedding.weight": (c["vocab_size"], c["embed_dim"])}
    for layer in range(c["layers"]):
        n_in = c["embed_dim"] if layer == 0 else c["hidden"]
        shapes[f"rnn.weight_ih_l{layer}"] = (gates * c["hidden"], n_in)
        shapes[f"rnn.weight_hh_l{layer}"] = (gates * c["hidden"], c["hidden"])
        shapes[f"rnn.bias_ih_l{layer}"] = (gates * c["hidden"],)
        shapes[f"rnn.bias_hh_l{layer}"] = (gates * c["hidden"],)
    shapes["head.weight"] = (c["num_classes"], c["hidden"])
    shapes["head.bias"] = (c["num_classes"],)
    return shapes


def _rnn_param_count(c: Config) -> int:
    gates, hidden, layers = (4 if c["cell"] == "lstm" else 3), c["hidden"], c["layers"]
    # Each layer: input and hidden weights and their two biases; layers after the first
    # take the hidden state as input.
    first = gates * hidden * (c["embed_dim"] + hidden + 2)
    later = gates * hidden * (hidden + hidden + 2) * (layers - 1)
    return int(c["vocab_size"] * c["embed_dim"] + first + later
               + c["num_classes"] * (hidden + 1))


def _build_rnn(c: Config) -> torch.nn.Module:
    from runtime.sequence_nn import RNNClassifier

    return RNNClassifier(c["cell"], c["vocab_size"], c["embed_dim"], c["hidden"], c["layers"],
                         c["num_classes"])


def _transformer_param_shapes(c: Config) -> Shapes:
    d, ff = c["d_model"], c["ff"]
    shapes: Shapes = {"embedding.weight": (c["vocab_size"], d)}
    for i in range(c["layers"]):
        p = f"encoder.layers.{i}."
        shapes.update({
            p + "self_attn.in_proj_weight": (3 * d, d), p + "self_attn.in_proj_bias": (3 * d,),
            p + "self_attn.out_proj.weight": (d, d), p + "self_attn.out_proj.bias": (d,),
            p + "linear1.weight": (ff, d), p + "linear1.bias": (ff,),
            p + "linear2.weight": (d, ff), p + "linear2.bias": (d,),
            p + "norm1.weight": (d,), p + "norm1.bias": (d,),
            p + "norm2.weight": (d,), p + "norm2.bias": (d,)})
    shapes["head.weight"] = (c["num_classes"], d)
    shapes["head.bias"] = (c["num_classes"],)
    return shapes


def _transformer_param_count(c: Config) -> int:
    d, ff = c["d_model"], c["ff"]
    # attention in/out projections 4d(d+1), feed-forward 2 d ff + ff + d, two norms 4d
    layer = 4 * d * (d + 1) + 2 * d * ff + ff + d + 4 * d
    return int(c["vocab_size"] * d + c["layers"] * layer + c["num_classes"] * (d + 1))


def _transformer_constraints(c: Config) -> list[FieldViolation]:
    found = []
    if c["d_model"] % c["heads"]:
        found.append(FieldViolation("config.heads", f"must divide d_model ({c['d_model']}); "
                                                    f"got {c['heads']}"))
    if c["max_len"] * c["d_model"] > MAX_POSITION_TABLE:
        found.append(FieldViolation(
            "config.max_len", f"max_len x d_model ({c['max_len']} x {c['d_model']}) must be at "
            f"most {MAX_POSITION_TABLE} (the position table the model allocates)"))
    return found


def _build_transformer(c: Config) -> torch.nn.Module:
    from runtime.sequence_nn import TransformerClassifier

    return TransformerClassifier(c["vocab_size"], c["d_model"], c["heads"], c["layers"],
                                 c["ff"], c["max_len"], c["num_classes"])


def check_sequences(c: Config, arrays: Mapping[str, np.ndarray]) -> list[InputProblem]:
    """lengths: one per row, each 1..T; token ids in [0, vocab_size); T <= max_len."""
    tokens, lengths = arrays["tokens"], arrays["lengths"]
    batch, steps = tokens.shape
    found: list[InputProblem] = []
    if lengths.shape[0] != batch:
        found.append(("lengths", "shape[0]", f"'lengths' has {lengths.shape[0]} entries for "
                      f"{batch} sequences in 'tokens' (one length per row)"))
    elif int(lengths.min()) < 1 or int(lengths.max()) > steps:
        found.append(("lengths", "", f"'lengths' must be in 1..{steps} (the tokens' sequence "
                      f"dim); got {int(lengths.min())}..{int(lengths.max())}"))
    if "max_len" in c and steps > c["max_len"]:
        found.append(("tokens", "shape[1]", f"sequences of {steps} tokens exceed the model's "
                      f"max_len {c['max_len']}"))
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= c["vocab_size"]:
        found.append(("tokens", "", f"token ids must be in [0, {c['vocab_size']}) "
                      f"(vocab_size); got {low}..{high}"))
    return found


RNN = Architecture(
    name="rnn",
    description="LSTM/GRU classifier: tokens [B, T] + lengths [B] → packed RNN → "
                "final hidden state → logits [B, num_classes]",
    defaults={"cell": "lstm", "vocab_size": 32, "embed_dim": 32, "hidden": 64,
              "layers": 1, "num_classes": 2},
    inputs=sequence_inputs,
    outputs=_sequence_logits,
    param_shapes=_rnn_param_shapes,
    build=_build_rnn,
    count_params=_rnn_param_count,
    choices={"cell": ("lstm", "gru")},
    check_inputs=check_sequences,
)

TRANSFORMER = Architecture(
    name="transformer",
    description="Transformer encoder classifier: tokens [B, T] + lengths [B] → "
                "embedding + sinusoidal positions → N layers with a padding mask → "
                "masked mean → logits [B, num_classes]",
    defaults={"vocab_size": 32, "d_model": 32, "heads": 4, "layers": 2, "ff": 64,
              "max_len": 64, "num_classes": 4},
    inputs=sequence_inputs,
    outputs=_sequence_logits,
    param_shapes=_transformer_param_shapes,
    build=_build_transformer,
    count_params=_transformer_param_count,
    constraints=_transformer_constraints,
    check_inputs=check_sequences,
)
