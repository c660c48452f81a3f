"""Named, configurable model architectures: metadata in pure Python, torch only to build.

The gateway validates requests and weights against an architecture without importing
torch; the worker calls `build` (which imports torch) to get the module.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maas.errors import FieldViolation, InvalidArgument, shown
from maas.json_input import parse_json

if TYPE_CHECKING:
    import numpy as np
    import torch

Config = dict[str, Any]
Shapes = dict[str, tuple[int, ...]]
# (input name, field below that input ("" or e.g. "shape[0]"), description) of a bad value.
InputProblem = tuple[str, str, str]
InputCheck = Callable[[Config, Mapping[str, "np.ndarray"]], list[InputProblem]]

MAX_WIDTH = 65536  # largest value of any config width
MAX_LIST_LENGTH = 16  # most entries of a list of widths (mlp `hidden`: its hidden layers)
MAX_CONFIG_JSON_BYTES = 16 * 1024  # a config is a handful of keys
# Most values of a transformer's sinusoidal position table (max_len x d_model, float32: 64 MiB),
# a buffer the worker allocates that no parameter count shows.
MAX_POSITION_TABLE = 1 << 24
MAX_REPORTED = 10  # unknown config keys given a violation each (the message lists them short)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor; -1 marks a variable dimension (the batch, a sequence)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Architecture:
    """A registry entry: defaults, tensor metadata, parameter shapes and a builder."""

    name: str
    description: str
    defaults: Config
    inputs: Callable[[Config], list[TensorSpec]]
    outputs: Callable[[Config], list[TensorSpec]]
    param_shapes: Callable[[Config], Shapes]
    build: Callable[[Config], torch.nn.Module]
    # How many parameters `build` makes, in closed form (no per-layer loop), where summing
    # `param_shapes` would take long for a deep config; see `param_count`.
    count_params: Callable[[Config], int] | None = None
    # The allowed values of each string config key.
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Problems between config keys (each key alone is fine), e.g. d_model % heads.
    constraints: Callable[[Config], list[FieldViolation]] = lambda c: []
    # Problems of input values the shapes cannot show (token ids, lengths), for the gateway.
    check_inputs: InputCheck = lambda c, arrays: []

    def param_count(self, config: Config) -> int:
        """How many parameters `build` makes, without torch: the gateway bounds training jobs
        by it (MAAS_TRAIN_MAX_PARAMS) before any memory is used."""
        if self.count_params is not None:
            return self.count_params(config)
        return sum(math.prod(shape) for shape in self.param_shapes(config).values())

    def resolve_config(self, config: Mapping[str, Any] | str | None) -> Config:
        """Defaults overlaid with `config` (a mapping or a JSON object); rejects unknown keys."""
        given = _parse_config(config)
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise InvalidArgument(
                f"architecture {self.name!r} has no config keys {shown(unknown)}; "
                f"it takes {sorted(self.defaults)}",
                violations=tuple(FieldViolation(f"config.{_cut(k)}", "unknown key")
                                 for k in unknown[:MAX_REPORTED]),
            )
        resolved = {**self.defaults, **given}
        for key, value in resolved.items():
            _check_like_default(key, value, self.defaults[key], self.choices.get(key, ()))
        violations = self.constraints(resolved)
        if violations:
            raise InvalidArgument(
                f"architecture {self.name!r}: "
                + "; ".join(f"{v.field} {v.description}" for v in violations),
                violations=tuple(violations))
        return resolved


def _cut(key: str) -> str:
    return key if len(key) <= 64 else key[:64] + "…"


def _parse_config(config: Mapping[str, Any] | str | None) -> Config:
    if config is None or config == "":
        return {}
    if isinstance(config, str):
        parsed = parse_json(config, "config_json", what="config",
                            max_bytes=MAX_CONFIG_JSON_BYTES)
        if not isinstance(parsed, dict):
            raise InvalidArgument(
                "config must be a JSON object",
                violations=(FieldViolation("config_json", "not an object"),),
            )
        return parsed
    return dict(config)


def _is_width(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_WIDTH


def _check_like_default(key: str, value: Any, default: Any, choices: tuple[str, ...]) -> None:
    """A config value is a width (one integer, or a list of them where the default is) or,
    where the default is a string, one of the key's choices."""
    if isinstance(default, str):
        if value in choices:
            return
        wanted = f"one of {list(choices)}"
    elif isinstance(default, list):
        if (isinstance(value, list) and 0 < len(value) <= MAX_LIST_LENGTH
                and all(_is_width(v) for v in value)):
            return
        wanted = f"a list of 1 to {MAX_LIST_LENGTH} integers from 1 to {MAX_WIDTH}"
    else:
        if _is_width(value):
            return
        wanted = f"one integer from 1 to {MAX_WIDTH}"
    raise InvalidArgument(
        f"config.{key} must be {wanted} (default {default}); got {shown(value)}",
        violations=(FieldViolation(f"config.{key}", f"not {wanted}"),),
    )


# --- mlp: [B, in_features] → hidden layers with ReLU → [B, num_classes] -----------------

def _mlp_widths(c: Config) -> list[int]:
    return [c["in_features"], *c["hidden"], c["num_classes"]]


def _mlp_param_shapes(c: Config) -> Shapes:
    widths = _mlp_widths(c)
    shapes: Shapes = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        shapes[f"layers.{2 * i}.weight"] = (n_out, n_in)
        shapes[f"layers.{2 * i}.bias"] = (n_out,)
    return shapes


def _mlp_param_count(c: Config) -> int:
    return sum(n_out * (n_in + 1) for n_in, n_out in itertools.pairwise(_mlp_widths(c)))


def _build_mlp(c: Config) -> torch.nn.Module:
    from maas.nn import MLP

    return MLP(_mlp_widths(c))


# --- cnn: the seed's CNN, made correct ------------------------------------------------

def _cnn_param_shapes(c: Config) -> Shapes:
    return {
        "conv1.weight": (10, 1, 5, 5), "conv1.bias": (10,),
        "conv2.weight": (20, 10, 5, 5), "conv2.bias": (20,),
        "fc1.weight": (50, 320), "fc1.bias": (50,),
        "fc2.weight": (c["num_classes"], 50), "fc2.bias": (c["num_classes"],),
    }


def _build_cnn(c: Config) -> torch.nn.Module:
    from maas.nn import SeedCNN

    return SeedCNN(num_classes=c["num_classes"])


def _logits(c: Config) -> list[TensorSpec]:
    return [TensorSpec("output", "FP32", (-1, c["num_classes"]))]


# --- rnn, transformer: tokens [B, T] + lengths [B] → logits [B, num_classes] -----------

def _sequence_inputs(c: Config) -> list[TensorSpec]:
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
    from maas.sequence_nn import RNNClassifier

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
    from maas.sequence_nn import TransformerClassifier

    return TransformerClassifier(c["vocab_size"], c["d_model"], c["heads"], c["layers"],
                                 c["ff"], c["max_len"], c["num_classes"])


def _check_sequences(c: Config, arrays: Mapping[str, np.ndarray]) -> list[InputProblem]:
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


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            name="mlp",
            description="Multi-layer perceptron: [B, in_features] → logits [B, num_classes]",
            defaults={"in_features": 64, "hidden": [256, 256], "num_classes": 10},
            inputs=lambda c: [TensorSpec("input", "FP32", (-1, c["in_features"]))],
            outputs=_logits,
            param_shapes=_mlp_param_shapes,
            build=_build_mlp,
            count_params=_mlp_param_count,
        ),
        Architecture(
            name="cnn",
            description="The seed CNN: [B,1,28,28] → (conv, max-pool, relu) x2 → fc 320→50→classes",
            defaults={"num_classes": 10},
            inputs=lambda c: [TensorSpec("input", "FP32", (-1, 1, 28, 28))],
            outputs=_logits,
            param_shapes=_cnn_param_shapes,
            build=_build_cnn,
        ),
        Architecture(
            name="rnn",
            description="LSTM/GRU classifier: tokens [B, T] + lengths [B] → packed RNN → "
                        "final hidden state → logits [B, num_classes]",
            defaults={"cell": "lstm", "vocab_size": 32, "embed_dim": 32, "hidden": 64,
                      "layers": 1, "num_classes": 2},
            inputs=_sequence_inputs,
            outputs=_sequence_logits,
            param_shapes=_rnn_param_shapes,
            build=_build_rnn,
            count_params=_rnn_param_count,
            choices={"cell": ("lstm", "gru")},
            check_inputs=_check_sequences,
        ),
        Architecture(
            name="transformer",
            description="Transformer encoder classifier: tokens [B, T] + lengths [B] → "
                        "embedding + sinusoidal positions → N layers with a padding mask → "
                        "masked mean → logits [B, num_classes]",
            defaults={"vocab_size": 32, "d_model": 32, "heads": 4, "layers": 2, "ff": 64,
                      "max_len": 64, "num_classes": 4},
            inputs=_sequence_inputs,
            outputs=_sequence_logits,
            param_shapes=_transformer_param_shapes,
            build=_build_transformer,
            count_params=_transformer_param_count,
            constraints=_transformer_constraints,
            check_inputs=_check_sequences,
        ),
    )
}


def get_architecture(name: str) -> Architecture:
    """The registered architecture, or INVALID_ARGUMENT naming the known ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown architecture {shown(name)}; known: {sorted(ARCHITECTURES)}",
            reason="UNKNOWN_ARCHITECTURE",
            violations=(FieldViolation("architecture", "not a registered architecture"),),
        ) from None
