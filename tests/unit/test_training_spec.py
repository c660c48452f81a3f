"""TrainingSpec: defaults, JSON round trip, and every bad field named in one error."""

from __future__ import annotations

from typing import Any

import pytest

from maas.errors import InvalidArgument
from maas.training_spec import TrainingSpec

BASE: dict[str, Any] = {"architecture": "cnn", "dataset": "digits"}


def _fields(data: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidArgument) as exc:
        TrainingSpec.from_dict(data)
    return [v.field for v in exc.value.violations]


def test_defaults_are_the_seeds() -> None:
    spec = TrainingSpec.from_dict(BASE)
    assert (spec.optimizer, spec.lr, spec.momentum, spec.batch_size) == ("sgd", 0.001, 0.9, 64)
    assert (spec.epochs, spec.max_steps, spec.seed, spec.keep) == (1, 0, 0, "last")
    assert spec.validation_fraction == 0.2 and spec.checkpoint_every == 50
    assert spec.loss == "cross_entropy" and spec.init_from == ""


def test_json_round_trip() -> None:
    spec = TrainingSpec.from_dict({**BASE, "architecture": "mlp", "config": {"hidden": [32]},
                                   "optimizer": "adamw", "lr": 1, "keep": "best",
                                   "init_from": "digits-mlp:3"})
    assert spec.lr == 1.0 and isinstance(spec.lr, float)
    assert TrainingSpec.from_json(spec.to_json()) == spec
    assert spec.with_config_resolved().config == {"in_features": 64, "hidden": [32],
                                                  "num_classes": 10}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"architecture": "resnet"}, "architecture"),
        ({"architecture": 3}, "architecture"),
        ({"config": {"num_classes": 0}}, "config.num_classes"),
        ({"config": {"depth": 3}}, "config.depth"),
        ({"config": [1]}, "config"),
        ({"dataset": ""}, "dataset"),
        ({"lr": -0.1}, "lr"),
        ({"lr": 0}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": -1, "max_steps": 10}, "epochs"),
        ({"max_steps": -1}, "max_steps"),
        ({"validation_fraction": 0.95}, "validation_fraction"),
        ({"validation_fraction": -0.1}, "validation_fraction"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"loss": "mse"}, "loss"),
        ({"keep": "worst"}, "keep"),
        ({"keep": "best", "validation_fraction": 0}, "keep"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"seed": -1}, "seed"),
        ({"checkpoint_every": -5}, "checkpoint_every"),
        ({"init_from": "model:v2"}, "init_from"),
        ({"init_from": "model:0"}, "init_from"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, Any], field: str) -> None:
    assert _fields({**BASE, **change}) == [field]


def test_missing_required_fields() -> None:
    assert _fields({}) == ["architecture", "dataset"]


def test_every_violation_is_reported_at_once() -> None:
    fields = _fields({"architecture": "resnet", "dataset": "digits", "lr": -1,
                      "batch_size": 0, "optimizer": "lbfgs", "extra": 1})
    assert sorted(fields) == ["architecture", "batch_size", "extra", "lr", "optimizer"]


def test_max_steps_alone_bounds_training() -> None:
    spec = TrainingSpec.from_dict({**BASE, "epochs": 0, "max_steps": 100})
    assert spec.epochs == 0 and spec.max_steps == 100


def test_validate_checks_a_constructed_spec() -> None:
    TrainingSpec("mlp", "digits").validate()
    with pytest.raises(InvalidArgument) as exc:
        TrainingSpec("mlp", "digits", lr=0.0, batch_size=0).validate()
    assert [v.field for v in exc.value.violations] == ["lr", "batch_size"]


@pytest.mark.parametrize("text", ["not json", "[1, 2]"])
def test_from_json_rejects_non_objects(text: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        TrainingSpec.from_json(text)
    assert [v.field for v in exc.value.violations] == ["spec"]
