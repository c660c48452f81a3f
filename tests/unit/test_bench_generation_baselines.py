"""The generation bench's baselines compute what they claim: a static batch gives each request
the greedy tokens maas's engine gives it alone and decodes until its longest sequence ends
(the shorter ones keep their slots); a point counts the tokens its clients received."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
import torch

from bench.generation_baselines import (
    Request,
    request_mix,
    run_continuous,
    run_static,
    run_static_batch,
)
from runtime.gpt_nn import GPT
from runtime.queue.v1.queue_pb2 import GenerateTask
from worker.generation import GenerationEngine

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def model() -> Iterator[GPT]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the bench runs it (two threads on two busy cores crawl)
    torch.manual_seed(0)
    yield GPT(vocab_size=259, d_model=32, heads=4, layers=2, ff=64, max_len=256).eval()
    torch.set_num_threads(threads)


def ticks(step_s: float = 0.001) -> Callable[[], float]:
    """A clock that advances `step_s` each time it is read: a baseline reads it once per
    decoding step, so a window of `duration_s` is duration_s / step_s steps."""
    counter = itertools.count()
    return lambda: next(counter) * step_s


def alone(model: GPT, request: Request) -> list[int]:
    engine = GenerationEngine(model, 1)
    engine.add("k", GenerateTask(prompt=request.prompt, max_tokens=request.max_tokens))
    made: list[int] = []
    while engine.keys:
        for event in engine.step():
            made += event.token_ids
    return made


def test_a_static_batch_makes_the_engines_tokens_and_runs_to_its_longest(model: GPT) -> None:
    requests = [Request("17+25=", 3), Request("a longer prompt, here", 11), Request("xy", 6)]
    seqs, steps = run_static_batch(model, requests)
    for seq, request in zip(seqs, requests, strict=True):
        assert seq.tokens == alone(model, request)
        assert seq.finish in ("length", "eos") and seq.first_s <= seq.end_s
    assert steps == max(len(s.tokens) for s in seqs) - 1  # one decode per token but the last


def test_continuous_batching_makes_more_tokens_per_step_and_answers_sooner(model: GPT) -> None:
    static = run_static(model, 8, 0.3, seed=0, clock=ticks())
    continuous = run_continuous(model, 8, 0.3, seed=0, clock=ticks())
    for point in (static, continuous):
        assert point.tokens_per_s == point.tokens / 0.3
        assert len(point.ttft_s) >= 8 and min(point.ttft_s) > 0
        assert 0 < sum(point.finishes.values()) <= len(point.ttft_s)
        assert set(point.finishes) <= {"length", "eos"}
    # ~300 steps of 8 slots: static leaves the slots of ended sequences idle
    assert static.tokens < 300 * 8 * 0.8 < continuous.tokens <= 300 * 8
    # static: a client whose request ended waits for the batch's longest to send the next
    assert static.ttft_ms(90) > 5 * continuous.ttft_ms(90)


def test_the_request_mix_is_seeded_and_mixed() -> None:
    first = [r for r, _ in zip(request_mix(0), range(50), strict=False)]
    assert first == [r for r, _ in zip(request_mix(0), range(50), strict=False)]
    assert all(8 <= len(r.prompt) <= 64 and 8 <= r.max_tokens <= 128 for r in first)
    assert len({r.max_tokens for r in first}) > 10
