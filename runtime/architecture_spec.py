"""What an architecture is: the `Architecture` record (defaults, tensor specs, parameter
shapes, a builder) and how a config is resolved against its defaults and checked, in pure
Python. The registered architectures are in runtime/architectures.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from maas.errors import FieldViolation, InvalidArgument, shown
from runtime.json_input import parse_json

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
    # Trained on next-token prediction (a dataset's labels are prompt lengths, not classes);
    # its output is the next token's logits over the vocabulary.
    is_generative: bool = False

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
