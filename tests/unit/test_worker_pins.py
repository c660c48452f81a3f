"""MAAS_WORKER_MODELS: parsing, and which model ids a pin list serves (or, with `!`, does
not serve)."""

from __future__ import annotations

import pytest

from runtime.settings import Settings
from scheduler.workers import serves


def test_the_setting_is_a_sorted_set_of_pins() -> None:
    assert Settings.from_env({}).worker_model_pins == ()
    pins = Settings.from_env({"MAAS_WORKER_MODELS": " cnn, acme/mlp,,cnn "}).worker_model_pins
    assert pins == ("acme/mlp", "cnn")


@pytest.mark.parametrize(("pins", "model", "expected"), [
    ((), "anything", True),
    (("mlp",), "mlp", True),
    (("mlp",), "acme/mlp", True),  # a name: every tenant's model of that name
    (("acme/mlp",), "acme/mlp", True),
    (("acme/mlp",), "mlp", False),  # an id: that model only
    (("acme/mlp",), "beta/mlp", False),
    (("cnn",), "mlp", False),
    (("!cnn",), "cnn", False),  # every model but cnn: a general fleet beside a cnn pool
    (("!cnn",), "acme/cnn", False),
    (("!cnn",), "mlp", True),
    (("!acme/cnn",), "cnn", True),
    (("!acme/cnn", "!mlp"), "beta/digits", True),
    (("!acme/cnn", "!mlp"), "acme/mlp", False),
])
def test_a_pin_is_an_id_or_a_name(pins: tuple[str, ...], model: str, expected: bool) -> None:
    assert serves(pins, model) is expected


@pytest.mark.parametrize("value", ["cnn,!mlp", "!", "!,cnn"])
def test_pins_and_exclusions_do_not_mix(value: str) -> None:
    with pytest.raises(ValueError, match="MAAS_WORKER_MODELS"):
        Settings.from_env({"MAAS_WORKER_MODELS": value})
