"""The generative `gpt`: byte tokens, the `addition` dataset, the model's three ways in
(forward, prefill, decode) agreeing, its config checks, and the next-token objective."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from maas.errors import InvalidArgument
from runtime import gpt_tokens
from runtime.architectures import TensorSpec, get_architecture
from runtime.datasets import Dataset, builtin_dataset, check_prompts, dataset_sha256
from runtime.gpt_nn import GPT, KVCache
from worker.training.objectives import NextToken, greedy_matches

SMALL: dict[str, Any] = {"d_model": 16, "heads": 4, "layers": 2, "ff": 32, "max_len": 24}
ADDITION_SHA256 = "78e6386dca02d7b3b531e3aae88fdb26dbcd8406e1304d8fe8bfc0da4851e2f4"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread, as workers run: two threads on a busy 2-core box crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_gpt(seed: int = 0) -> GPT:
    arch = get_architecture("gpt")
    torch.manual_seed(seed)
    model = arch.build(arch.resolve_config(SMALL)).eval()
    assert isinstance(model, GPT)
    return model


# --- tokens ------------------------------------------------------------------------------

def test_tokens_are_utf8_bytes_and_specials_are_dropped() -> None:
    assert gpt_tokens.encode("17+25=") == [49, 55, 43, 50, 53, 61]
    assert gpt_tokens.encode("é") == [0xC3, 0xA9]
    ids = [gpt_tokens.BOS, *gpt_tokens.encode("héllo"), gpt_tokens.EOS, gpt_tokens.PAD]
    assert gpt_tokens.decode(ids) == "héllo"
    assert gpt_tokens.decode([0xC3]) == "\ufffd"  # a cut character is replaced
    assert (gpt_tokens.BOS, gpt_tokens.EOS, gpt_tokens.PAD, gpt_tokens.VOCAB_MIN) == (
        256, 257, 258, 259)


# --- the addition dataset ----------------------------------------------------------------

def test_addition_is_every_sum_with_its_prompt_length() -> None:
    data = builtin_dataset("addition")
    assert data.lengths is not None
    tokens = data.features.astype(np.int64)
    sums = set()
    for row, length, prompt in zip(tokens, data.lengths, data.labels, strict=True):
        assert row[0] == gpt_tokens.BOS and row[length - 1] == gpt_tokens.EOS
        assert (row[length:] == gpt_tokens.PAD).all()
        question = gpt_tokens.decode(row[:prompt].tolist())
        answer = gpt_tokens.decode(row[prompt:length].tolist())
        assert question.endswith("=")
        a, b = (int(x) for x in question[:-1].split("+"))
        assert int(answer) == a + b
        sums.add((a, b))
    assert len(sums) == 10_000 == data.num_samples


def test_addition_is_deterministic() -> None:
    one, two = builtin_dataset("addition"), builtin_dataset("addition")
    np.testing.assert_array_equal(one.features, two.features)
    assert dataset_sha256(one) == dataset_sha256(two) == ADDITION_SHA256


def test_prompts_must_leave_a_token_to_predict() -> None:
    features = np.array([[256, 1, 2, 257], [256, 3, 257, 258]], np.float32)
    lengths = np.array([4, 3])
    check_prompts(Dataset("ok", features, np.array([2, 2]), lengths))
    for prompts in ([2, 3], [0, 1]):
        with pytest.raises(InvalidArgument) as caught:
            check_prompts(Dataset("bad", features, np.array(prompts), lengths))
        assert [v.field for v in caught.value.violations] == ["labels"]


# --- architecture and module ---------------------------------------------------------------

@pytest.mark.parametrize("config", [{}, SMALL, {"vocab_size": 260, "d_model": 6, "heads": 2,
                                               "layers": 1, "ff": 3, "max_len": 2}])
def test_param_shapes_and_count_are_the_built_modules(config: dict[str, Any]) -> None:
    arch = get_architecture("gpt")
    resolved = arch.resolve_config(config)
    module = arch.build(resolved)
    assert arch.param_shapes(resolved) == {k: tuple(v.shape)
                                           for k, v in module.state_dict().items()}
    assert arch.param_count(resolved) == sum(p.numel() for p in module.parameters())


def test_metadata_is_the_sequence_models_with_vocabulary_logits() -> None:
    arch = get_architecture("gpt")
    config = arch.resolve_config(None)
    assert arch.is_generative
    assert arch.inputs(config) == [TensorSpec("tokens", "INT64", (-1, -1)),
                                   TensorSpec("lengths", "INT64", (-1,))]
    assert arch.outputs(config) == [TensorSpec("logits", "FP32", (-1, 259))]


@pytest.mark.parametrize(("config", "field"), [
    ({"vocab_size": 258}, "config.vocab_size"),
    ({"d_model": 30, "heads": 4}, "config.heads"),
    ({"max_len": 1}, "config.max_len"),
    ({"layers": 0}, "config.layers"),
    ({"ff": "64"}, "config.ff"),
    ({"num_classes": 3}, "config.num_classes"),
])
def test_config_validation(config: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        get_architecture("gpt").resolve_config(config)
    assert [v.field for v in caught.value.violations] == [field]


def test_forward_is_causal_and_lengths_pick_the_last_position() -> None:
    model = small_gpt()
    tokens = torch.randint(0, 259, (3, 10), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits = model(tokens)
        changed = tokens.clone()
        changed[:, 6:] = gpt_tokens.PAD
        assert logits.shape == (3, 10, 259)
        assert torch.allclose(model(changed)[:, :6], logits[:, :6], atol=1e-5)
        last = model(tokens, torch.tensor([10, 4, 1]))
        assert torch.allclose(last, logits[[0, 1, 2], [9, 3, 0]], atol=1e-5)


def test_decode_of_ragged_batches_equals_forward() -> None:
    """Three sequences prefilled to different lengths, then decoded together step by step:
    each step's logits are forward()'s on the whole sequence so far."""
    model = small_gpt()
    generator = torch.Generator().manual_seed(2)
    sequences = [torch.randint(0, 259, (n,), generator=generator) for n in (9, 14, 6)]
    prefill = [2, 7, 4]
    with torch.inference_mode():
        caches: list[KVCache] = []
        for sequence, n in zip(sequences, prefill, strict=True):
            logits, cache = model.prefill(sequence[:n])
            assert len(cache) == n and len(cache.layers) == 2
            assert cache.layers[0][0].shape == (4, n, 4)
            assert torch.allclose(logits, model(sequence[None, :n])[0, -1], atol=1e-4)
            caches.append(cache)
        for step in range(2):
            at = [n + step for n in prefill]
            next_ids = torch.stack([s[t] for s, t in zip(sequences, at, strict=True)])
            decoded = model.decode(next_ids, caches)
            assert [len(c) for c in caches] == [t + 1 for t in at]
            for row, (sequence, t) in enumerate(zip(sequences, at, strict=True)):
                full = model(sequence[None, : t + 1])[0, -1]
                assert (decoded[row] - full).abs().max() <= 1e-4, (step, row)


def test_decode_refuses_a_full_cache() -> None:
    model = small_gpt()
    with torch.inference_mode():
        _, cache = model.prefill(torch.zeros(SMALL["max_len"], dtype=torch.long))
        with pytest.raises(ValueError, match="max_len"):
            model.decode(torch.tensor([1]), [cache])


# --- the next-token objective ----------------------------------------------------------------

def _copy_task() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BOS x y = x y EOS: the answer repeats the prompt's two tokens."""
    generator = torch.Generator().manual_seed(3)
    pairs = torch.randint(0, 10, (256, 2), generator=generator)
    bos = torch.full((256, 1), gpt_tokens.BOS)
    eq = torch.full((256, 1), 61)
    eos = torch.full((256, 1), gpt_tokens.EOS)
    tokens = torch.cat([bos, pairs, eq, pairs, eos], dim=1)
    return tokens, torch.full((256,), 7), torch.full((256,), 4)


def test_greedy_matches_scores_whole_answers() -> None:
    """A model that learns the copy task generates every answer; an untrained one none."""
    tokens, lengths, prompts = _copy_task()
    model = small_gpt().train()
    objective = NextToken()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)  # 80 steps: ~1.5 s
    with torch.inference_mode():
        assert objective.evaluate(model.eval(), (tokens, lengths), prompts)["val_accuracy"] < 0.1
    model.train()
    for _ in range(80):
        optimizer.zero_grad()
        objective.loss(model, (tokens, lengths), prompts, "mean").backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    with torch.inference_mode():
        metrics = objective.evaluate(model.eval(), (tokens, lengths), prompts)
        assert metrics["val_accuracy"] == 1.0 and metrics["val_loss"] < 0.05
        wrong = tokens.clone()
        wrong[:5, 5] = (wrong[:5, 5] + 1) % 10  # the expected answer no longer matches
        matches = greedy_matches(model, wrong, lengths, prompts)
        assert matches.tolist() == [False] * 5 + [True] * 251


def test_the_loss_ignores_prompt_and_padding() -> None:
    tokens, lengths, prompts = _copy_task()
    model = small_gpt()
    objective = NextToken()
    base = objective.loss(model, (tokens, lengths), prompts, "sum")
    # Targets are tokens 4..6 (the answer and EOS), predicted at positions 3..5.
    logits = model(tokens)[:, 3:6]
    expected = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 4:7],
                                                 reduction="none").mean(dim=1).sum()
    assert torch.allclose(base, expected, rtol=1e-5)
    padded = torch.cat([tokens, torch.full((256, 3), gpt_tokens.PAD)], dim=1)
    assert torch.allclose(objective.loss(model, (padded, lengths), prompts, "sum"), base)
    assert torch.allclose(objective.loss(model, (tokens, lengths), prompts, "mean") * 256,
                          base, rtol=1e-5)
