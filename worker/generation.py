"""GenerationEngine: iteration-level (continuous) batching of generations on one `gpt` model.

Each sequence has its own KVCache and its own seeded torch.Generator. Between two steps a
new sequence joins (`add`: its prompt is prefilled alone) and a finished or cancelled one
leaves (`drop`), so a short request never waits for a long one. One `step` samples the next
token of every sequence from its pending logits, then runs one batched `decode` of those
tokens over caches of different lengths. Runs in the worker's torch thread, never on the
event loop; knows nothing of Redis (worker/generation_runner.py feeds it jobs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from maas.v1.generation_service_pb2 import FinishReason
from runtime import gpt_tokens
from runtime.generation_spec import prompt_ids
from runtime.gpt_nn import GPT, KVCache
from runtime.queue.v1.queue_pb2 import GenerateTask
from worker.generation_text import TextStream

LENGTH = FinishReason.FINISH_REASON_LENGTH
STOP = FinishReason.FINISH_REASON_STOP
EOS = FinishReason.FINISH_REASON_EOS
DEADLINE = FinishReason.FINISH_REASON_DEADLINE


@dataclass
class Sequence:
    """One generation in the running batch."""

    key: str
    task: GenerateTask
    prompt: list[int]
    cache: KVCache
    generator: torch.Generator
    logits: torch.Tensor  # [V]: the next token's, not yet sampled
    limit: int  # most tokens: max_tokens, or the room max_len leaves
    text: TextStream
    tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StepEvent:
    """What one step made for one sequence: its new token (none when it ended on its
    deadline), the text that became safe to send, and how it ended, if it did."""

    key: str
    index: int
    token_ids: list[int]
    text: str
    finish: FinishReason.ValueType = FinishReason.FINISH_REASON_UNSPECIFIED
    # Set with `finish`: the whole generation.
    all_tokens: list[int] = field(default_factory=list)
    full_text: str = ""
    prompt_tokens: int = 0
    stop: str = ""


class GenerationEngine:
    def __init__(self, model: torch.nn.Module, max_sequences: int) -> None:
        if not isinstance(model, GPT):
            raise TypeError(f"generation needs a gpt model; got {type(model).__name__}")
        self.model = model
        self.max_sequences = max_sequences
        self.device = next(model.parameters()).device
        self._running: dict[str, Sequence] = {}

    @property
    def keys(self) -> list[str]:
        return list(self._running)

    @property
    def free_slots(self) -> int:
        return self.max_sequences - len(self._running)

    def add(self, key: str, task: GenerateTask) -> None:
        """Prefills a new sequence's prompt; it makes its first token at the next step.
        ValueError when its prompt leaves no room in the model's max_len."""
        prompt = prompt_ids(task.prompt)
        room = self.model.max_len - len(prompt)
        if room < 1:
            raise ValueError(f"the prompt is {len(prompt)} tokens; the model holds "
                             f"{self.model.max_len} in all")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(task.seed)
        with torch.inference_mode():
            logits, cache = self.model.prefill(torch.tensor(prompt, device=self.device))
        self._running[key] = Sequence(key, task, prompt, cache, generator, logits,
                                      min(task.max_tokens, room), TextStream(task.stop))

    def drop(self, key: str) -> None:
        """A sequence leaves at once (cancelled); its cache is freed."""
        self._running.pop(key, None)

    def step(self) -> list[StepEvent]:
        """One token for every running sequence; the ones that end leave the batch."""
        now_ms = int(time.time() * 1000)
        events = []
        going: list[Sequence] = []
        for seq in list(self._running.values()):
            if seq.task.end_unix_ms and now_ms >= seq.task.end_unix_ms:
                events.append(self._end(seq, [], seq.text.finish(), DEADLINE))
                continue
            token = sample(seq.logits, seq.task, seq.generator)
            seq.tokens.append(token)
            event = self._advance(seq, token)
            events.append(event)
            if not event.finish:
                going.append(seq)
        if going:
            self._decode(going)
        return events

    def _advance(self, seq: Sequence, token: int) -> StepEvent:
        index = len(seq.tokens) - 1
        if token == gpt_tokens.EOS:
            return self._end(seq, [token], seq.text.finish(), EOS)
        text = seq.text.push(token)
        if seq.text.matched:
            return self._end(seq, [token], text, STOP)
        if len(seq.tokens) >= seq.limit:
            return self._end(seq, [token], text + seq.text.finish(), LENGTH)
        return StepEvent(seq.key, index, [token], text)

    def _end(self, seq: Sequence, token_ids: list[int], text: str,
             finish: FinishReason.ValueType) -> StepEvent:
        del self._running[seq.key]
        return StepEvent(seq.key, len(seq.tokens) - len(token_ids), token_ids, text, finish,
                         list(seq.tokens), seq.text.text, len(seq.prompt), seq.text.matched)

    def _decode(self, going: list[Sequence]) -> None:
        tokens = torch.tensor([s.tokens[-1] for s in going], device=self.device)
        with torch.inference_mode():
            logits = self.model.decode(tokens, [s.cache for s in going])
        for seq, row in zip(going, logits, strict=True):
            seq.logits = row


def sample(logits: torch.Tensor, task: GenerateTask, generator: torch.Generator) -> int:
    """The next token: the most likely at temperature 0, else drawn from the softmax of
    logits / temperature, cut to the top_k most likely and to the top_p nucleus."""
    if task.temperature <= 0:
        return int(torch.argmax(logits))
    scores = logits.float() / task.temperature
    if 0 < task.top_k < scores.numel():
        kth = torch.topk(scores, task.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if 0 < task.top_p < 1:
        ordered, order = torch.sort(probs, descending=True)
        before = torch.cumsum(ordered, dim=-1) - ordered  # mass of the more likely ones
        ordered = ordered.masked_fill(before >= task.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))
