"""TrainingSpec: defaults, JSON round trip, and every bad field named in one error."""

from __future__ import annotations

from typing import Any

import pytest

from maas.errors import InvalidArgument
from maas.v1 import training_service_pb2 as pb
from runtime.training_proto import from_proto
from runtime.training_spec import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_LR, MAX_STEPS, TrainingSpec

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


# --- bounds a hostile spec meets (issue 12) -----------------------------------------------

@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lr": 1e308}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"lr": MAX_LR * 1.01}, "lr"),
        ({"weight_decay": float("inf")}, "weight_decay"),
        ({"weight_decay": 1.5}, "weight_decay"),
        ({"batch_size": MAX_BATCH_SIZE + 1}, "batch_size"),
        ({"batch_size": 2**31 - 1}, "batch_size"),
        ({"epochs": MAX_EPOCHS + 1}, "epochs"),
        ({"max_steps": MAX_STEPS + 1}, "max_steps"),
        ({"max_steps": 2**63 - 1}, "max_steps"),
        ({"checkpoint_every": 2**63 - 1}, "checkpoint_every"),
        ({"init_from": "m" * 10_000}, "init_from"),
        ({"init_from": "m:" + "9" * 10_000}, "init_from"),
        ({"architecture": "mlp", "config": {"hidden": [65536] * 100}}, "config.hidden"),
    ],
)
def test_each_bound_is_named(change: dict[str, Any], field: str) -> None:
    assert _fields({**BASE, **change}) == [field]


def test_the_bounds_themselves_are_accepted() -> None:
    spec = TrainingSpec.from_dict({**BASE, "lr": MAX_LR, "weight_decay": 1.0,
                                   "batch_size": MAX_BATCH_SIZE, "epochs": MAX_EPOCHS,
                                   "max_steps": MAX_STEPS, "checkpoint_every": MAX_STEPS})
    assert spec.lr == MAX_LR


def test_the_attack_spec_is_refused_naming_both_fields() -> None:
    """Found: CreateTrainingJob queued an mlp of hidden=[65536]*100 (4e11 parameters) with
    lr=1e308."""
    fields = _fields({**BASE, "architecture": "mlp", "config": {"hidden": [65536] * 100},
                      "lr": 1e308})
    assert sorted(fields) == ["config.hidden", "lr"]


@pytest.mark.parametrize("text", ["[" * 100_000, '{"seed": ' + "1" * 5000 + "}"])
def test_from_json_of_text_that_breaks_json_loads(text: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        TrainingSpec.from_json(text)
    assert [v.field for v in exc.value.violations] == ["spec"]


@pytest.mark.parametrize("config_json", ["[" * 100_000, '{"hidden": [' + "1" * 5000 + "]}",
                                         '{"hidden": [1]' + " " * 20_000 + "}"])
def test_wire_spec_config_json_is_invalid_argument(config_json: str) -> None:
    """maas.v1.TrainingSpec.config_json is parsed without RecursionError or ValueError
    escaping (they were INTERNAL)."""
    wire = pb.TrainingSpec(architecture="mlp", dataset="digits", config_json=config_json)
    with pytest.raises(InvalidArgument) as exc:
        from_proto(wire)
    assert [v.field for v in exc.value.violations] == ["config_json"]
