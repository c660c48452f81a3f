"""runtime.architectures: metadata in pure Python that agrees with the torch modules it builds."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
import torch

from maas.errors import InvalidArgument
from runtime.architectures import (
    ARCHITECTURES,
    MAX_CONFIG_JSON_BYTES,
    MAX_LIST_LENGTH,
    MAX_POSITION_TABLE,
    TensorSpec,
    get_architecture,
)

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
        get_architecture("resnet")
    err = caught.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "UNKNOWN_ARCHITECTURE"
    assert [v.field for v in err.violations] == ["architecture"]
    assert "'cnn'" in err.message and "'mlp'" in err.message


def test_registry_names_are_their_keys() -> None:
    assert sorted(ARCHITECTURES) == ["cnn", "gpt", "mlp", "rnn", "transformer"]
    assert all(a.name == key and a.description for key, a in ARCHITECTURES.items())


# --- sequence architectures: rnn, transformer ------------------------------------------

SEQUENCE_CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("rnn", {}),
    ("rnn", {"cell": "gru", "layers": 2, "hidden": 8, "embed_dim": 4, "vocab_size": 5}),
    ("rnn", {"cell": "lstm", "layers": 3, "num_classes": 7}),
    ("transformer", {}),
    ("transformer", {"d_model": 12, "heads": 3, "layers": 1, "ff": 8, "max_len": 40}),
]
SEQUENCE_IDS = [f"{n}-{config_id(c) or 'default'}" for n, c in SEQUENCE_CONFIGS]


def _sequence_batch(vocab: int, lengths: list[int], steps: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(len(lengths))
    tokens = torch.randint(0, vocab, (len(lengths), steps), generator=generator)
    return tokens, torch.tensor(lengths)


@pytest.mark.parametrize(("name", "config"), SEQUENCE_CONFIGS, ids=SEQUENCE_IDS)
def test_sequence_param_shapes_match_the_built_module(name: str, config: dict[str, Any]) -> None:
    arch = get_architecture(name)
    resolved = arch.resolve_config(config)
    built = {k: tuple(v.shape) for k, v in arch.build(resolved).state_dict().items()}
    assert arch.param_shapes(resolved) == built
    assert "embedding.weight" in built  # attribution hooks the `embedding` submodule


@pytest.mark.parametrize(("name", "config"), SEQUENCE_CONFIGS, ids=SEQUENCE_IDS)
def test_padding_does_not_change_the_logits(name: str, config: dict[str, Any]) -> None:
    """Each row of a padded batch gives the logits of that row alone, unpadded; whatever the
    padding holds."""
    arch = get_architecture(name)
    resolved = arch.resolve_config(config)
    torch.manual_seed(0)
    model = arch.build(resolved).eval()
    lengths = [5, 1, 9, 3]
    tokens, lens = _sequence_batch(resolved["vocab_size"], lengths, steps=12)
    with torch.inference_mode():
        batched = model(tokens, lens)
        noisy = tokens.clone()
        for row, n in enumerate(lengths):
            noisy[row, n:] = (row + 1) % resolved["vocab_size"]
        assert torch.allclose(model(noisy, lens), batched, atol=1e-5)
        for row, n in enumerate(lengths):
            alone = model(tokens[row : row + 1, :n], torch.tensor([n]))
            assert torch.allclose(alone, batched[row : row + 1], atol=1e-5), (row, n)
    assert tuple(batched.shape) == (4, resolved["num_classes"])


def test_sequence_metadata() -> None:
    for name in ("rnn", "transformer"):
        arch = get_architecture(name)
        config = arch.resolve_config({"num_classes": 3})
        assert arch.inputs(config) == [TensorSpec("tokens", "INT64", (-1, -1)),
                                       TensorSpec("lengths", "INT64", (-1,))]
        assert arch.outputs(config) == [TensorSpec("logits", "FP32", (-1, 3))]


@pytest.mark.parametrize("name", ["rnn", "transformer"])
def test_the_embedding_can_be_hooked(name: str) -> None:
    """What LayerIntegratedGradients does: replace the embedding's output and take gradients
    with respect to it, through forward(tokens, lengths)."""
    arch = get_architecture(name)
    model = arch.build(arch.resolve_config(None)).eval()
    tokens, lengths = _sequence_batch(32, [4, 2], steps=4)
    captured: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        replaced = (out * 0.5).detach().requires_grad_()
        captured.append(replaced)
        return replaced

    embedding = model.get_submodule("embedding")
    handle = embedding.register_forward_hook(hook)
    try:
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN RNN backward needs train()
            model(tokens, lengths)[:, 0].sum().backward()
    finally:
        handle.remove()
    [embedded] = captured
    assert embedded.grad is not None and embedded.grad.shape == (2, 4, embedded.shape[-1])
    assert bool(embedded.grad[1, 2:].eq(0).all())  # padding gets no attribution


@pytest.mark.parametrize(("name", "config", "field"), [
    ("rnn", {"cell": "rnn"}, "config.cell"),
    ("rnn", {"cell": 3}, "config.cell"),
    ("rnn", {"hidden": "64"}, "config.hidden"),
    ("rnn", {"layers": 0}, "config.layers"),
    ("transformer", {"d_model": 30, "heads": 4}, "config.heads"),
    ("transformer", {"max_len": -1}, "config.max_len"),
    ("transformer", {"cell": "gru"}, "config.cell"),
])
def test_sequence_config_validation(name: str, config: dict[str, Any], field: str) -> None:
    assert violations_of(name, config) == [field]


def test_sequence_input_checks() -> None:
    arch = get_architecture("transformer")
    config = arch.resolve_config({"vocab_size": 10, "max_len": 6})
    tokens = np.array([[1, 2, 3], [4, 5, 0]], dtype=np.int64)

    def problems(tok: np.ndarray, lengths: list[int]) -> list[tuple[str, str]]:
        found = arch.check_inputs(config, {"tokens": tok, "lengths": np.array(lengths)})
        return [(name, below) for name, below, _ in found]

    assert problems(tokens, [3, 2]) == []
    assert problems(tokens, [3]) == [("lengths", "shape[0]")]
    assert problems(tokens, [0, 2]) == [("lengths", "")]
    assert problems(tokens, [3, 4]) == [("lengths", "")]
    assert problems(tokens * 3, [3, 2]) == [("tokens", "")]
    assert problems(-tokens, [3, 2]) == [("tokens", "")]
    assert problems(np.ones((2, 7), np.int64), [7, 1]) == [("tokens", "shape[1]")]


# --- bounds a hostile config meets (issue 12) ---------------------------------------------

PARAM_COUNT_CONFIGS = [*CONFIGS, *SEQUENCE_CONFIGS,
                       ("rnn", {"cell": "gru", "layers": 4, "hidden": 3, "embed_dim": 5}),
                       ("transformer", {"d_model": 8, "heads": 2, "layers": 3, "ff": 5}),
                       ("gpt", {}),
                       ("gpt", {"vocab_size": 300, "d_model": 12, "heads": 3, "layers": 3,
                                "ff": 7, "max_len": 9})]


@pytest.mark.parametrize(("name", "config"), PARAM_COUNT_CONFIGS, ids=[
    f"{n}-{config_id(c) or 'default'}" for n, c in PARAM_COUNT_CONFIGS])
def test_param_count_is_the_built_modules(name: str, config: dict[str, Any] | None) -> None:
    """The gateway's estimate (no torch) is exactly what torch builds."""
    arch = get_architecture(name)
    resolved = arch.resolve_config(config)
    built = sum(p.numel() for p in arch.build(resolved).parameters())
    assert arch.param_count(resolved) == built


def test_param_count_of_every_default_config() -> None:
    for arch in ARCHITECTURES.values():
        config = arch.resolve_config(None)
        assert arch.param_count(config) == sum(
            p.numel() for p in arch.build(config).parameters()), arch.name


def test_param_count_of_a_huge_config_takes_no_memory() -> None:
    """The attack config's count is arithmetic: nothing is allocated, nothing loops per
    layer (65536 layers)."""
    mlp, transformer = get_architecture("mlp"), get_architecture("transformer")
    hidden = mlp.resolve_config({"hidden": [65536] * MAX_LIST_LENGTH})
    assert mlp.param_count(hidden) == 64 * 65536 + 65536 + 15 * 65537 * 65536 + 10 * 65537
    deep = transformer.resolve_config({"layers": 65536})
    assert transformer.param_count(deep) > 65536 * 4 * 32 * 32


@pytest.mark.parametrize("hidden", [[65536] * 100, [1] * (MAX_LIST_LENGTH + 1)])
def test_hidden_has_at_most_16_layers(hidden: list[int]) -> None:
    assert violations_of("mlp", {"hidden": hidden}) == ["config.hidden"]
    assert get_architecture("mlp").resolve_config({"hidden": [1] * MAX_LIST_LENGTH})


@pytest.mark.parametrize("text", ["[" * 100_000, '{"num_classes": ' + "1" * 5000 + "}",
                                  '{"hidden": [' + "9" * 5000 + "]}", "\ud800"])
def test_config_json_that_breaks_json_loads(text: str) -> None:
    """Nesting past the recursion limit, integers past 4,300 digits: INVALID_ARGUMENT."""
    assert violations_of("mlp", text) == ["config_json"]


def test_config_json_is_at_most_16_kib() -> None:
    text = '{"num_classes": 3' + " " * MAX_CONFIG_JSON_BYTES + "}"
    assert violations_of("mlp", text) == ["config_json"]


def test_transformer_position_table_is_bounded() -> None:
    """max_len x d_model floats are allocated at build: at most MAX_POSITION_TABLE."""
    assert violations_of("transformer", {"max_len": 65536, "d_model": 65536, "heads": 1}) == [
        "config.max_len"]
    assert get_architecture("transformer").resolve_config(
        {"max_len": MAX_POSITION_TABLE // 256, "d_model": 256})
