"""What a training job is: architecture, dataset, optimizer and loop settings. No torch.

`TrainingSpec.from_dict` checks types and unknown keys, `validate` checks values; both
report every problem at once as one INVALID_ARGUMENT whose violations name spec fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from maas.errors import FieldViolation, InvalidArgument
from runtime.architectures import get_architecture
from runtime.json_input import parse_json

LOSSES = ("cross_entropy",)
OPTIMIZERS = ("sgd", "adam", "adamw")
KEEP = ("last", "best")
MAX_VALIDATION_FRACTION = 0.9
# Hard cap of data-parallel replicas; a cluster may set a lower one (MAAS_TRAIN_MAX_REPLICAS).
MAX_REPLICAS = 256
# Bounds of the loop's numbers: nothing a real job needs is near them, and none can make a
# worker allocate or loop without end.
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 1.0
MAX_BATCH_SIZE = 65536
MAX_EPOCHS = 10_000
MAX_STEPS = 1_000_000_000  # also the most steps between checkpoints
MAX_INIT_FROM = 200  # characters of "model[:version]"
_KIND = {str: "a string", int: "an integer", float: "a number"}
_INIT_FROM = re.compile(r"^[^:\s]+(:[1-9][0-9]*)?$")


@dataclass(frozen=True)
class TrainingSpec:
    """One training job. epochs=0 with max_steps>0 trains for max_steps only."""

    architecture: str
    dataset: str
    config: dict[str, Any] = field(default_factory=dict)
    # "" (fresh weights from the seed) or "model[:version]" to fine-tune registered weights.
    init_from: str = ""
    validation_fraction: float = 0.2
    loss: str = "cross_entropy"
    optimizer: str = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 1
    # 0 = no limit; otherwise training stops after this many optimizer steps.
    max_steps: int = 0
    seed: int = 0
    # Steps between checkpoints (one is also written at every epoch end); 0 = epoch ends only.
    checkpoint_every: int = 50
    # "last": the final weights; "best": the epoch with the highest validation accuracy.
    keep: str = "last"
    # Data-parallel replicas (one worker each, gang-scheduled); batch_size is the global batch.
    replicas: int = 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSpec:
        """A validated spec; INVALID_ARGUMENT listing every unknown, mistyped or bad field."""
        known = {f.name: f for f in fields(cls)}
        violations = [FieldViolation(k, "unknown field") for k in sorted(set(data) - set(known))]
        values: dict[str, Any] = {}
        for name, f in known.items():
            if name in data:
                value, why = _coerce(data[name], f.default, name)
                if why:
                    violations.append(FieldViolation(name, why))
                else:
                    values[name] = value
            elif f.default is MISSING and f.default_factory is MISSING:
                violations.append(FieldViolation(name, "required"))
        spec = cls(**{"architecture": "", "dataset": "", **values})
        # A field already reported (mistyped, missing) is not reported again for its value.
        reported = {v.field for v in violations}
        violations += [v for v in spec.violations() if v.field.split(".")[0] not in reported]
        _raise_if_any(violations)
        return spec

    @classmethod
    def from_json(cls, text: str | bytes) -> TrainingSpec:
        data = parse_json(text, "spec", what="training spec")
        if not isinstance(data, dict):
            raise InvalidArgument("training spec must be a JSON object",
                                  violations=(FieldViolation("spec", "not an object"),))
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_config_resolved(self) -> TrainingSpec:
        """The spec with the architecture's defaults filled into `config`."""
        return replace(self, config=get_architecture(self.architecture).resolve_config(self.config))

    def validate(self) -> None:
        """INVALID_ARGUMENT with one FieldViolation per bad field; None when all is well."""
        _raise_if_any(self.violations())

    def violations(self) -> list[FieldViolation]:
        """Every value problem of this spec (empty when valid)."""
        found = _architecture_violations(self.architecture, self.config)
        found += _loop_violations(self)
        found += _choice_violations(self)
        return found


def _architecture_violations(name: str, config: Mapping[str, Any]) -> list[FieldViolation]:
    try:
        get_architecture(name).resolve_config(config)
    except InvalidArgument as exc:
        return list(exc.violations)
    return []


def _loop_violations(s: TrainingSpec) -> list[FieldViolation]:
    checks = [
        ("dataset", bool(s.dataset.strip()), "must name a dataset"),
        ("init_from", s.init_from == "" or (len(s.init_from) <= MAX_INIT_FROM
                                            and bool(_INIT_FROM.match(s.init_from))),
         f'must be "" or "model[:version]" with a positive version (at most {MAX_INIT_FROM} '
         "characters)"),
        ("validation_fraction", 0.0 <= s.validation_fraction <= MAX_VALIDATION_FRACTION,
         f"must be in [0, {MAX_VALIDATION_FRACTION}]"),
        ("lr", 0 < s.lr <= MAX_LR, f"must be a number in (0, {MAX_LR:g}]"),
        ("momentum", 0.0 <= s.momentum < 1.0, "must be in [0, 1)"),
        ("weight_decay", 0 <= s.weight_decay <= MAX_WEIGHT_DECAY,
         f"must be in [0, {MAX_WEIGHT_DECAY:g}]"),
        ("batch_size", 1 <= s.batch_size <= MAX_BATCH_SIZE, f"must be in [1, {MAX_BATCH_SIZE}]"),
        ("epochs", 1 <= s.epochs <= MAX_EPOCHS or (s.epochs == 0 and s.max_steps > 0),
         f"must be in [1, {MAX_EPOCHS}] (or 0 with max_steps > 0)"),
        ("max_steps", 0 <= s.max_steps <= MAX_STEPS, f"must be in [0, {MAX_STEPS}] (0 = no limit)"),
        ("seed", 0 <= s.seed < 2**63, "must be in [0, 2**63)"),
        ("checkpoint_every", 0 <= s.checkpoint_every <= MAX_STEPS,
         f"must be in [0, {MAX_STEPS}] (0 = epoch ends only)"),
        ("replicas", 1 <= s.replicas <= MAX_REPLICAS, f"must be in [1, {MAX_REPLICAS}]"),
        ("replicas", s.replicas < 1 or s.batch_size % s.replicas == 0,
         f"batch_size {s.batch_size} (the global batch) must be divisible by replicas"),
    ]
    return [FieldViolation(name, why) for name, ok, why in checks if not ok]


def _choice_violations(s: TrainingSpec) -> list[FieldViolation]:
    found = [FieldViolation(name, f"must be one of {list(choices)}")
             for name, value, choices in (("loss", s.loss, LOSSES),
                                          ("optimizer", s.optimizer, OPTIMIZERS),
                                          ("keep", s.keep, KEEP))
             if value not in choices]
    if s.keep == "best" and s.validation_fraction == 0:
        found.append(FieldViolation("keep", '"best" needs validation_fraction > 0'))
    return found


def _coerce(value: Any, default: Any, name: str) -> tuple[Any, str]:
    """(value of the field's type, "") or (None, why not)."""
    if name == "config":
        return (dict(value), "") if isinstance(value, Mapping) else (None, "must be an object")
    if name in ("architecture", "dataset"):
        return (value, "") if isinstance(value, str) else (None, "must be a string")
    if isinstance(value, bool):
        return None, f"must be {_KIND[type(default)]}, got a boolean"
    if isinstance(default, str):
        return (value, "") if isinstance(value, str) else (None, "must be a string")
    if isinstance(default, float) and isinstance(value, int | float):
        return float(value), ""
    if isinstance(default, int) and isinstance(value, int):
        return value, ""
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value), ""
    return None, f"must be {_KIND[type(default)]}"


def _raise_if_any(violations: list[FieldViolation]) -> None:
    if violations:
        listed = "; ".join(f"{v.field}: {v.description}" for v in violations[:6])
        raise InvalidArgument(f"invalid training spec ({listed})", violations=tuple(violations))
