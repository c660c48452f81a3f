"""maas.architectures: metadata in pure Python that agrees with the torch modules it builds."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import torch

from maas.architectures import ARCHITECTURES, TensorSpec, get_architecture
from maas.errors import InvalidArgument

CONFIGS: list[tuple[str, dict[str, Any] | None]] = [
    ("mlp", None),
    ("mlp", {"in_features": 3, "hidden": [5], "num_classes": 2}),
    ("mlp", {"hidden": [16, 8, 4]}),
    ("mlp", {"in_features": 1, "num_classes": 1}),
    ("cnn", None),
    ("cnn", {"num_classes": 3}),
]


def config_id(value: object) -> str:
    return "default" if value is None else "-".join(f"{k}={v}" for k, v in value.items())  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "config"), CONFIGS, ids=[
    f"{n}-{config_id(c)}" for n, c in CONFIGS])
def test_param_shapes_match_the_built_module(name: str, config: dict[str, Any] | None) -> None:
    arch = get_architecture(name)
    resolved = arch.resolve_config(config)
    module = arch.build(resolved)
    built = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert arch.param_shapes(resolved) == built


@pytest.mark.parametrize(("name", "config"), CONFIGS, ids=[
    f"{n}-{config_id(c)}" for n, c in CONFIGS])
def test_tensor_specs_match_a_forward_pass(name: str, config: dict[str, Any] | None) -> None:
    arch = get_architecture(name)
    resolved = arch.resolve_config(config)
    [inp] = arch.inputs(resolved)
    [out] = arch.outputs(resolved)
    assert (inp.datatype, out.datatype) == ("FP32", "FP32")
    assert inp.shape[0] == -1 and out.shape[0] == -1  # the batch
    batch = 3
    x = torch.zeros((batch, *inp.shape[1:]), dtype=torch.float32)
    with torch.inference_mode():
        y = arch.build(resolved).eval()(x)
    assert tuple(y.shape) == (batch, *out.shape[1:])


def test_cnn_parameter_names() -> None:
    arch = get_architecture("cnn")
    assert set(arch.param_shapes(arch.resolve_config(None))) == {
        f"{layer}.{kind}" for layer in ("conv1", "conv2", "fc1", "fc2")
        for kind in ("weight", "bias")}


def test_default_specs() -> None:
    mlp, cnn = get_architecture("mlp"), get_architecture("cnn")
    assert mlp.inputs(mlp.resolve_config(None)) == [TensorSpec("input", "FP32", (-1, 64))]
    assert cnn.inputs(cnn.resolve_config(None)) == [TensorSpec("input", "FP32", (-1, 1, 28, 28))]
    for arch in (mlp, cnn):
        assert arch.outputs(arch.resolve_config(None)) == [TensorSpec("output", "FP32", (-1, 10))]


def test_resolve_config_overlays_defaults() -> None:
    mlp = get_architecture("mlp")
    assert mlp.resolve_config(None) == mlp.defaults
    assert mlp.resolve_config("") == mlp.defaults
    assert mlp.resolve_config("{}") == mlp.defaults
    assert mlp.resolve_config('{"num_classes": 3}') == {**mlp.defaults, "num_classes": 3}
    assert mlp.resolve_config({"hidden": [7]}) == {**mlp.defaults, "hidden": [7]}


def test_resolve_config_does_not_change_the_defaults() -> None:
    mlp = get_architecture("mlp")
    before = {k: list(v) if isinstance(v, list) else v for k, v in mlp.defaults.items()}
    mlp.resolve_config({"hidden": [1, 2, 3]})
    assert mlp.defaults == before


def violations_of(name: str, config: object) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        get_architecture(name).resolve_config(config)  # type: ignore[arg-type]
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return [v.field for v in caught.value.violations]


def test_unknown_keys_are_each_named() -> None:
    assert violations_of("mlp", {"depth": 2, "width": 3}) == ["config.depth", "config.width"]
    assert violations_of("cnn", '{"hidden": [4]}') == ["config.hidden"]


@pytest.mark.parametrize("value", [0, -1, 65537, "3", 1.5, True, None, {}, [], [0], [3, -2],
                                   [2, "4"], [True]])
def test_bad_values(value: object) -> None:
    key = "hidden" if isinstance(value, list) else "num_classes"
    assert violations_of("mlp", {key: value}) == [f"config.{key}"]


@pytest.mark.parametrize(("key", "value"), [("hidden", 5), ("in_features", [3, 4]),
                                            ("num_classes", [10])])
def test_list_and_scalar_are_not_interchangeable(key: str, value: object) -> None:
    """`hidden` is a list of widths and the others are one integer each; a config that
    passes resolve_config must give parameter shapes (else RegisterModel fails INTERNAL)."""
    assert violations_of("mlp", {key: value}) == [f"config.{key}"]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"mlp"', "3", "null"])
def test_config_json_must_be_an_object(text: str) -> None:
    assert violations_of("mlp", text) == ["config_json"]


def test_unknown_architecture() -> None:
    with pytest.raises(InvalidArgument) as caught:
        get_architecture("transformer")
    err = caught.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "UNKNOWN_ARCHITECTURE"
    assert [v.field for v in err.violations] == ["architecture"]
    assert "'cnn'" in err.message and "'mlp'" in err.message


def test_registry_names_are_their_keys() -> None:
    assert sorted(ARCHITECTURES) == ["cnn", "mlp"]
    assert all(a.name == key and a.description for key, a in ARCHITECTURES.items())
