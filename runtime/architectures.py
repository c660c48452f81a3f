"""Named, configurable model architectures: metadata in pure Python, torch only to build.

The gateway validates requests and weights against an architecture without importing
torch; the worker calls `build` (which imports torch) to get the module. This module holds
the registry and `mlp` and `cnn`; the `Architecture` record and config checks are in
runtime/architecture_spec.py, `rnn` and `transformer` in runtime/sequence_architectures.py
(their names re-exported here), the generative `gpt` in runtime/gpt_architecture.py.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from maas.errors import FieldViolation, UnknownArchitecture, shown
from runtime.architecture_spec import MAX_CONFIG_JSON_BYTES as MAX_CONFIG_JSON_BYTES  # re-exported
from runtime.architecture_spec import MAX_LIST_LENGTH as MAX_LIST_LENGTH
from runtime.architecture_spec import MAX_REPORTED as MAX_REPORTED
from runtime.architecture_spec import MAX_WIDTH as MAX_WIDTH
from runtime.architecture_spec import Architecture as Architecture
from runtime.architecture_spec import Config as Config
from runtime.architecture_spec import InputCheck as InputCheck
from runtime.architecture_spec import InputProblem as InputProblem
from runtime.architecture_spec import Shapes as Shapes
from runtime.architecture_spec import TensorSpec as TensorSpec
from runtime.gpt_architecture import GPT_ARCHITECTURE
from runtime.sequence_architectures import MAX_POSITION_TABLE as MAX_POSITION_TABLE
from runtime.sequence_architectures import RNN, TRANSFORMER

if TYPE_CHECKING:
    import torch


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
    from runtime.nn import MLP

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
    from runtime.nn import SeedCNN

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
        RNN,
        TRANSFORMER,
        GPT_ARCHITECTURE,
    )
}


def get_architecture(name: str) -> Architecture:
    """The registered architecture, or INVALID_ARGUMENT naming the known ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitecture(
            f"unknown architecture {shown(name)}; known: {sorted(ARCHITECTURES)}",
            violations=(FieldViolation("architecture", "not a registered architecture"),),
        ) from None
