"""The generative architecture `gpt` (a decoder-only Transformer over byte-level tokens,
runtime/gpt_tokens.py): its metadata, parameter shapes and counts in pure Python; torch only
to build (runtime/gpt_nn.py).

Served like the sequence models: tokens [B, T] + lengths [B] → `logits` [B, vocab_size], the
next-token logits at each row's last real position. Trained on next-token prediction: a
dataset's labels are each row's prompt length (runtime/sequence_data.py `addition`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from maas.errors import FieldViolation
from runtime.architecture_spec import Architecture, Config, Shapes, TensorSpec
from runtime.gpt_tokens import VOCAB_MIN
from runtime.sequence_architectures import check_sequences, sequence_inputs

if TYPE_CHECKING:
    import torch


def _param_shapes(c: Config) -> Shapes:
    d, ff = c["d_model"], c["ff"]
    shapes: Shapes = {"embedding.weight": (c["vocab_size"], d),
                      "positions.weight": (c["max_len"], d)}
    for i in range(c["layers"]):
        p = f"blocks.{i}."
        shapes.update({
            p + "norm1.weight": (d,), p + "norm1.bias": (d,),
            p + "qkv.weight": (3 * d, d), p + "qkv.bias": (3 * d,),
            p + "proj.weight": (d, d), p + "proj.bias": (d,),
            p + "norm2.weight": (d,), p + "norm2.bias": (d,),
            p + "ff1.weight": (ff, d), p + "ff1.bias": (ff,),
            p + "ff2.weight": (d, ff), p + "ff2.bias": (d,)})
    shapes["norm.weight"], shapes["norm.bias"] = (d,), (d,)
    shapes["head.weight"] = (c["vocab_size"], d)
    return shapes


def _param_count(c: Config) -> int:
    d, ff = c["d_model"], c["ff"]
    # two norms 4d, attention in/out 4d(d+1), feed-forward 2 d ff + ff + d
    layer = 4 * d + 4 * d * (d + 1) + 2 * d * ff + ff + d
    return int(2 * c["vocab_size"] * d + c["max_len"] * d + c["layers"] * layer + 2 * d)


def _constraints(c: Config) -> list[FieldViolation]:
    found = []
    if c["vocab_size"] < VOCAB_MIN:
        found.append(FieldViolation("config.vocab_size", f"must be at least {VOCAB_MIN} (256 "
                                    f"bytes + BOS, EOS, PAD); got {c['vocab_size']}"))
    if c["d_model"] % c["heads"]:
        found.append(FieldViolation("config.heads", f"must divide d_model ({c['d_model']}); "
                                                    f"got {c['heads']}"))
    if c["max_len"] < 2:
        found.append(FieldViolation("config.max_len", f"must be at least 2 (a prompt and one "
                                                      f"token); got {c['max_len']}"))
    return found


def _build(c: Config) -> torch.nn.Module:
    from runtime.gpt_nn import GPT

    return GPT(c["vocab_size"], c["d_model"], c["heads"], c["layers"], c["ff"], c["max_len"])


GPT_ARCHITECTURE = Architecture(
    name="gpt",
    description="Decoder-only Transformer over byte tokens: tokens [B, T] + lengths [B] → "
                "embedding + learned positions → N pre-norm causal blocks → next-token "
                "logits [B, vocab_size] at each row's last position",
    defaults={"vocab_size": VOCAB_MIN, "d_model": 64, "heads": 4, "layers": 2, "ff": 256,
              "max_len": 32},
    inputs=sequence_inputs,
    outputs=lambda c: [TensorSpec("logits", "FP32", (-1, c["vocab_size"]))],
    param_shapes=_param_shapes,
    build=_build,
    count_params=_param_count,
    constraints=_constraints,
    check_inputs=check_sequences,
    is_generative=True,
)
