"""The generation bench's request mix, what one point measured, and its two in-process
baselines on the same `gpt`, both greedy, both closed loops of N clients (a client sends its
next request when its previous one ends), neither with network, queue or Redis:

- STATIC batching (`run_static`): take the N waiting requests, prefill each prompt, decode
  the batch until its LONGEST sequence ends. No request joins mid-batch; a sequence that
  ended keeps its slot (decoded on, its tokens thrown away), and its client's next request
  waits for the batch to end. Tokens stream out as sampled (a client sees each at once).
  Prefill and decode are GPT.prefill / GPT.decode, the kernels of maas's engine, so static
  and maas differ in scheduling (and maas's network and queue): this flatters static.
- CONTINUOUS batching in-process (`run_continuous`): maas's own GenerationEngine
  (worker/generation.py) driven in a loop, a new request joining between two steps as soon
  as a sequence ends: what maas's worker does, without the gateway, Redis and the client.
"""

from __future__ import annotations

import statistics
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from maas.v1.generation_service_pb2 import FinishReason
from runtime import gpt_tokens
from runtime.generation_spec import prompt_ids
from runtime.gpt_nn import GPT
from runtime.queue.v1.queue_pb2 import GenerateTask
from worker.generation import GenerationEngine

PROMPT_BYTES = (8, 64)  # prompt lengths, uniform, inclusive
MAX_TOKENS = (8, 128)  # max_tokens, uniform, inclusive
ALPHABET = string.ascii_letters + string.digits + " +=.,"
Clock = Callable[[], float]


@dataclass(frozen=True)
class Request:
    prompt: str
    max_tokens: int


def request_mix(seed: int) -> Iterator[Request]:
    """An endless, seeded stream of requests of mixed prompt and output lengths."""
    rng = np.random.default_rng(seed)
    while True:
        size = int(rng.integers(PROMPT_BYTES[0], PROMPT_BYTES[1] + 1))
        prompt = "".join(rng.choice(list(ALPHABET), size))
        yield Request(prompt, int(rng.integers(MAX_TOKENS[0], MAX_TOKENS[1] + 1)))


@dataclass
class Point:
    """One system at one concurrency: tokens received in the window, times to first token
    of the requests whose first token came in it, and how the finished ones ended."""

    system: str
    concurrency: int
    duration_s: float
    tokens: int = 0
    ttft_s: list[float] = field(default_factory=list)
    finishes: dict[str, int] = field(default_factory=dict)
    costs: dict[str, Any] = field(default_factory=dict)  # per token (bench.costs), maas only

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.duration_s

    def ttft_ms(self, q: float) -> float:
        return float(np.percentile(self.ttft_s, q) * 1000) if self.ttft_s else float("nan")

    def finished(self, reason: str) -> None:
        self.finishes[reason] = self.finishes.get(reason, 0) + 1

    def summary(self) -> dict[str, Any]:
        return {"system": self.system, "concurrency": self.concurrency,
                "duration_s": self.duration_s, "tokens": self.tokens,
                "tokens_per_s": self.tokens_per_s, "requests_started": len(self.ttft_s),
                "ttft_p50_ms": self.ttft_ms(50), "ttft_p90_ms": self.ttft_ms(90),
                "ttft_mean_ms": statistics.fmean(self.ttft_s) * 1000 if self.ttft_s else None,
                "finishes": self.finishes, "costs_per_token": self.costs}


@dataclass
class Sequence:
    """One request in a static batch: its tokens, and when it made the first and the last."""

    request: Request
    limit: int
    tokens: list[int] = field(default_factory=list)
    first_s: float = 0.0
    end_s: float = 0.0
    finish: str = ""


def run_static_batch(model: GPT, requests: list[Request], clock: Clock = time.perf_counter,
                     until_s: float = float("inf")) -> tuple[list[Sequence], int]:
    """Greedy generation of a static batch: every prompt prefilled, then decoded together
    until the longest ends (or `until_s` passes: tokens from then on are not taken); a
    sequence ends at EOS or its limit but keeps its slot. Returns the sequences and how many
    batched decode steps ran."""
    seqs, caches, rows = [], [], []
    with torch.inference_mode():
        for r in requests:
            prompt = prompt_ids(r.prompt)
            logits, cache = model.prefill(torch.tensor(prompt))
            seqs.append(Sequence(r, min(r.max_tokens, model.max_len - len(prompt))))
            caches.append(cache)
            rows.append(logits)
        if max(len(c) for c in caches) + max(s.limit for s in seqs) > model.max_len:
            raise ValueError("a kept slot would outgrow max_len: shorten the mix")
        steps = 0
        while True:
            chosen = [int(torch.argmax(row)) for row in rows]
            now = clock()
            if now >= until_s:
                return seqs, steps
            for seq, token in zip(seqs, chosen, strict=True):
                if not seq.finish:
                    _take(seq, token, now)
            if all(s.finish for s in seqs):
                return seqs, steps
            rows = list(model.decode(torch.tensor(chosen), caches))
            steps += 1


def _take(seq: Sequence, token: int, now: float) -> None:
    if not seq.tokens:
        seq.first_s = now
    seq.tokens.append(token)
    if token == gpt_tokens.EOS:
        seq.finish, seq.end_s = "eos", now
    elif len(seq.tokens) >= seq.limit:
        seq.finish, seq.end_s = "length", now


def run_static(model: GPT, concurrency: int, duration_s: float, seed: int,
               clock: Clock = time.perf_counter) -> Point:
    """N clients in a closed loop against static batches of N, for `duration_s`."""
    point = Point("static", concurrency, duration_s)
    requests = request_mix(seed)
    start = clock()
    end = start + duration_s
    sent = [start] * concurrency  # when each client sent the request now waiting
    while clock() < end:
        seqs, _ = run_static_batch(model, [next(requests) for _ in range(concurrency)],
                                   clock, until_s=end)
        for i, seq in enumerate(seqs):
            if seq.tokens:
                point.ttft_s.append(seq.first_s - sent[i])
            point.tokens += len(seq.tokens)
            if seq.finish:
                point.finished(seq.finish)
            sent[i] = seq.end_s  # its client sends the next request then
    return point


def run_continuous(model: GPT, concurrency: int, duration_s: float, seed: int,
                   clock: Clock = time.perf_counter) -> Point:
    """N clients in a closed loop against maas's engine (N slots), for `duration_s`."""
    point = Point("continuous", concurrency, duration_s)
    engine = GenerationEngine(model, concurrency)
    requests = request_mix(seed)
    sent: dict[str, float] = {}  # when each running request was sent, by key
    start = clock()
    end = start + duration_s

    def send(key: str, now: float) -> None:
        request = next(requests)
        sent[key] = now
        engine.add(key, GenerateTask(prompt=request.prompt, max_tokens=request.max_tokens))

    for i in range(concurrency):
        send(f"c{i}-0", start)
    while True:
        events = engine.step()
        now = clock()
        if now >= end:
            return point
        for e in events:
            point.tokens += len(e.token_ids)
            if e.token_ids and e.index == 0:
                point.ttft_s.append(now - sent[e.key])
            if e.finish:
                point.finished(FinishReason.Name(e.finish).removeprefix("FINISH_REASON_")
                               .lower())
                client, turn = e.key.rsplit("-", 1)
                send(f"{client}-{int(turn) + 1}", now)
