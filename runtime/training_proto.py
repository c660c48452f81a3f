"""TrainingSpec (the validated dataclass) ↔ maas.v1.TrainingSpec (the wire message)."""

from __future__ import annotations

import json
from typing import Any, Final

from maas.v1 import training_service_pb2 as pb
from runtime.architectures import MAX_CONFIG_JSON_BYTES
from runtime.json_input import parse_json
from runtime.training_spec import TrainingSpec

# Fields with a non-zero default travel as proto3 `optional`: unset means "the default".
# (Final keeps each name's literal type, which HasField requires.)
_OPTIONAL: Final = ("validation_fraction", "lr", "momentum", "weight_decay", "batch_size",
                    "epochs", "checkpoint_every", "replicas")
_PLAIN = ("architecture", "dataset", "init_from", "loss", "optimizer", "max_steps", "seed", "keep")


def spec_fields(spec: pb.TrainingSpec) -> dict[str, Any]:
    """The fields a client set, by TrainingSpec's names (unset ones take the defaults)."""
    out: dict[str, Any] = {n: getattr(spec, n) for n in _PLAIN if getattr(spec, n)}
    out.update({n: getattr(spec, n) for n in _OPTIONAL if spec.HasField(n)})
    out.setdefault("architecture", spec.architecture)
    out.setdefault("dataset", spec.dataset)
    if spec.config_json:
        out["config"] = parse_json(spec.config_json, "config_json", what="spec.config_json",
                                   max_bytes=MAX_CONFIG_JSON_BYTES)
    return out


def from_proto(spec: pb.TrainingSpec) -> TrainingSpec:
    """The validated spec (INVALID_ARGUMENT naming every bad field)."""
    return TrainingSpec.from_dict(spec_fields(spec))


def to_proto(model_name: str, spec: TrainingSpec) -> pb.TrainingSpec:
    fields = spec.to_dict()
    config = fields.pop("config")
    return pb.TrainingSpec(model_name=model_name, config_json=json.dumps(config, sort_keys=True),
                           **fields)
