"""Generation in the SDK: the request of `Client.generate` / `AsyncClient.generate` (sans
I/O, shared by both, as maas/calls.py explains) and the chunks they yield.

    for chunk in client.generate("adder", "17+25=", max_tokens=8):
        print(chunk.text, end="", flush=True)       # the last chunk has finish_reason
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from maas.calls import Stream
from maas.v1.generation_service_pb2 import FinishReason, GenerateRequest, GenerateResponse


@dataclass(frozen=True)
class GenerationChunk:
    """The next piece of a generation: its text, its token ids, the position of the first
    of them; the last chunk also says why it ended ("length", "stop", "eos", "deadline")
    and the token counts (None / 0 on the others)."""

    text: str
    token_ids: tuple[int, ...]
    index: int
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop: str = ""
    model_version: str = ""
    attempts: int = 0  # on the last chunk: how many attempts ran it (2+: a worker was lost)


def chunk_of(response: GenerateResponse) -> GenerationChunk:
    final = response.final if response.HasField("final") else None
    return GenerationChunk(
        text=response.text, token_ids=tuple(response.token_ids), index=response.index,
        finish_reason=(FinishReason.Name(final.finish_reason).removeprefix("FINISH_REASON_")
                       .lower() if final is not None else None),
        prompt_tokens=final.prompt_tokens if final is not None else 0,
        completion_tokens=final.completion_tokens if final is not None else 0,
        stop=final.stop if final is not None else "", model_version=response.model_version,
        attempts=final.attempts if final is not None else 0)


def generate(model: str, prompt: str, *, max_tokens: int, temperature: float, top_k: int,
             top_p: float | None, seed: int | None, stop: Sequence[str], version: str,
             priority: int, request_id: str, timeout_s: float | None) -> Stream:
    """The Generate call; the server checks every value (INVALID_ARGUMENT naming it)."""
    request = GenerateRequest(model=model, model_version=version, prompt=prompt,
                              max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                              stop=list(stop), request_id=request_id, priority=priority)
    if top_p is not None:
        request.top_p = top_p
    if seed is not None:
        request.seed = seed
    return Stream("generation", "Generate", request, timeout_s, chunk_of)
