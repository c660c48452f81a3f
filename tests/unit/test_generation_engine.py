"""The worker's generation engine on a small random `gpt`: continuous batching gives a request
the tokens it gets alone, a seeded request is reproducible, stop strings and EOS end a
sequence, a cancelled one frees its slot; and the text stream's hold-back of stop strings."""

from __future__ import annotations

import time

import pytest
import torch

from maas.v1.generation_service_pb2 import FinishReason
from runtime.gpt_nn import GPT
from runtime.queue.v1.queue_pb2 import GenerateTask
from worker.generation import GenerationEngine, StepEvent
from worker.generation_text import TextStream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(vocab_size=259, d_model=32, heads=4, layers=2, ff=64, max_len=48).eval()


def run(engine: GenerationEngine, jobs: dict[str, GenerateTask],
        join_after: dict[str, int] | None = None) -> dict[str, list[StepEvent]]:
    """Steps until every job ended; a job in join_after joins after that many steps."""
    join_after = join_after or {}
    out: dict[str, list[StepEvent]] = {k: [] for k in jobs}
    steps = 0
    while True:
        for key, task in jobs.items():
            if join_after.get(key, 0) == steps:
                engine.add(key, task)
        if not engine.keys and steps >= max(join_after.values(), default=0):
            return out
        for event in engine.step():
            out[event.key].append(event)
        steps += 1


def tokens(events: list[StepEvent]) -> list[int]:
    return [t for e in events for t in e.token_ids]


def test_a_request_joining_mid_generation_gets_the_tokens_it_gets_alone(model: GPT) -> None:
    long = GenerateTask(prompt="a long one", max_tokens=30, seed=1)
    short = GenerateTask(prompt="17+25=", max_tokens=6, seed=2)
    alone = run(GenerationEngine(model, 4), {"short": short})["short"]
    together = run(GenerationEngine(model, 4), {"long": long, "short": short},
                   join_after={"short": 5})
    assert tokens(together["short"]) == tokens(alone)
    assert len(tokens(together["short"])) == 6
    assert together["short"][-1].finish == FinishReason.FINISH_REASON_LENGTH
    # continuous: the short one, started later, ended before the long one
    assert len(together["short"]) + 5 < len(together["long"])


def test_seeded_sampling_is_reproducible_and_seeds_differ(model: GPT) -> None:
    def sampled(seed: int) -> list[int]:
        task = GenerateTask(prompt="x", max_tokens=20, temperature=1.5, top_k=50, top_p=0.9,
                            seed=seed)
        return tokens(run(GenerationEngine(model, 2), {"k": task})["k"])

    assert sampled(7) == sampled(7)
    assert sampled(7) != sampled(8)


def test_stop_string_ends_and_is_cut(model: GPT) -> None:
    task = GenerateTask(prompt="hi", max_tokens=40, seed=0)
    free = run(GenerationEngine(model, 1), {"k": task})["k"]
    text = free[-1].full_text
    stop = text[3:5]
    assert len(stop) == 2, text
    task.stop.append(stop)
    ended = run(GenerationEngine(model, 1), {"k": task})["k"]
    last = ended[-1]
    assert last.finish == FinishReason.FINISH_REASON_STOP and last.stop == stop
    assert last.full_text == text[:text.find(stop)]
    assert "".join(e.text for e in ended) == last.full_text


def test_cancel_frees_the_slot_and_deadline_ends_with_what_was_made(model: GPT) -> None:
    engine = GenerationEngine(model, 2)
    engine.add("a", GenerateTask(prompt="a", max_tokens=30))
    engine.add("b", GenerateTask(prompt="b", max_tokens=30))
    assert engine.free_slots == 0
    engine.step()
    engine.drop("a")
    assert engine.free_slots == 1 and engine.keys == ["b"]
    engine.add("c", GenerateTask(prompt="c", max_tokens=30,
                                 end_unix_ms=int(time.time() * 1000) - 1))
    events = {e.key: e for e in engine.step()}
    assert events["c"].finish == FinishReason.FINISH_REASON_DEADLINE
    assert events["c"].token_ids == [] and engine.keys == ["b"]


def test_max_len_bounds_prompt_and_tokens(model: GPT) -> None:
    engine = GenerationEngine(model, 1)
    with pytest.raises(ValueError, match=r"holds"):
        engine.add("k", GenerateTask(prompt="x" * 47, max_tokens=5))
    out = run(engine, {"k": GenerateTask(prompt="x" * 40, max_tokens=100)})["k"]
    assert len(tokens(out)) <= 48 - 41
    assert out[-1].finish in (FinishReason.FINISH_REASON_LENGTH, FinishReason.FINISH_REASON_EOS)


def test_text_stream_holds_back_what_may_become_a_stop() -> None:
    stream = TextStream(["END"])
    sent = [stream.push(b) for b in b"abcEN"]
    assert "".join(sent) == "abc"  # "EN" may begin "END"
    assert stream.push(ord("X")) == "ENX"
    assert stream.push(ord("E")) + stream.push(ord("N")) + stream.push(ord("D")) == ""
    assert stream.matched == "END" and stream.text == "abcENX"
    multi = TextStream()
    euro = "€".encode()
    assert [multi.push(b) for b in euro] == ["", "", "€"]
    assert multi.push(257) == "" and multi.finish() == ""
