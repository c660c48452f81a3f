"""Named, configurable model architectures: metadata in pure Python, torch only to build.

The gateway validates requests and weights against an architecture without importing
torch; the worker calls `build` (which imports torch) to get the module.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maas.errors import FieldViolation, InvalidArgument, shown

if TYPE_CHECKING:
    import torch

Config = dict[str, Any]
Shapes = dict[str, tuple[int, ...]]

MAX_WIDTH = 65536  # largest value of any config width
MAX_REPORTED = 10  # unknown config keys given a violation each (the message lists them short)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor; -1 marks a variable dimension (the batch)."""

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
            _check_like_default(key, value, self.defaults[key])
        return resolved


def _cut(key: str) -> str:
    return key if len(key) <= 64 else key[:64] + "…"


def _parse_config(config: Mapping[str, Any] | str | None) -> Config:
    if config is None or config == "":
        return {}
    if isinstance(config, str):
        try:
            parsed = json.loads(config)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                f"config is not valid JSON: {exc}",
                violations=(FieldViolation("config_json", str(exc)),),
            ) from exc
        if not isinstance(parsed, dict):
            raise InvalidArgument(
                "config must be a JSON object",
                violations=(FieldViolation("config_json", "not an object"),),
            )
        return parsed
    return dict(config)


def _is_width(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_WIDTH


def _check_like_default(key: str, value: Any, default: Any) -> None:
    """Every config value is a width: one integer, or a list of them where the default is."""
    if isinstance(default, list):
        if isinstance(value, list) and value and all(_is_width(v) for v in value):
            return
        wanted = f"a non-empty list of integers from 1 to {MAX_WIDTH}"
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
