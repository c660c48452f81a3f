"""Checks a GenerateRequest against the model version that will run it, and makes its task.

Every problem is one google.rpc.BadRequest field violation, all reported at once; a value
from the request is shown shortened (the status must fit in gRPC's trailers).
"""

from __future__ import annotations

import math
import secrets

from gateway.bounds import MAX_REQUEST_ID_BYTES, check_priority
from maas.errors import FieldViolation, InvalidArgument, shown
from maas.v1.generation_service_pb2 import GenerateRequest
from maas.v1.model_service_pb2 import ModelVersion
from runtime import generation_spec as spec
from runtime.queue.v1.queue_pb2 import GenerateTask


def _prompt_problems(prompt: str, version: ModelVersion) -> list[FieldViolation]:
    if not prompt:
        return [FieldViolation("prompt", "is empty: give the text to continue")]
    size = len(prompt.encode("utf-8", errors="surrogatepass"))
    limit = spec.max_len(version)
    if size + 1 >= min(limit, spec.MAX_PROMPT_BYTES):  # + the start token; room for one more
        return [FieldViolation("prompt", f"is {size} bytes (+1 start token); model "
                               f"{version.model!r} holds {limit} tokens in all (max_len), so "
                               f"a prompt may have at most {limit - 2} bytes")]
    return []


def _sampling_problems(request: GenerateRequest) -> list[FieldViolation]:
    found = []
    if not 1 <= request.max_tokens <= spec.MAX_TOKENS:
        found.append(FieldViolation("max_tokens", f"must be 1..{spec.MAX_TOKENS}; got "
                                    f"{request.max_tokens}"))
    if not (math.isfinite(request.temperature)
            and 0 <= request.temperature <= spec.MAX_TEMPERATURE):
        found.append(FieldViolation("temperature", f"must be 0 (greedy) to "
                                    f"{spec.MAX_TEMPERATURE:g}; got {request.temperature:g}"))
    if not 0 <= request.top_k <= spec.MAX_TOP_K:
        found.append(FieldViolation("top_k", f"must be 0 (no limit) to {spec.MAX_TOP_K}; got "
                                    f"{request.top_k}"))
    if request.HasField("top_p") and not (math.isfinite(request.top_p)
                                          and 0 < request.top_p <= 1):
        found.append(FieldViolation("top_p", f"must be in (0, 1] (unset: 1); got "
                                    f"{request.top_p:g}"))
    return found


def _stop_problems(stop: list[str]) -> list[FieldViolation]:
    if len(stop) > spec.MAX_STOP_STRINGS:
        return [FieldViolation("stop", f"has {len(stop)} strings; at most "
                               f"{spec.MAX_STOP_STRINGS} are allowed")]
    found = []
    for i, s in enumerate(stop):
        size = len(s.encode("utf-8", errors="surrogatepass"))
        if not 1 <= size <= spec.MAX_STOP_BYTES:
            found.append(FieldViolation(f"stop[{i}]", f"is {size} bytes; a stop string has 1 "
                                        f"to {spec.MAX_STOP_BYTES}"))
    return found


def generate_task(request: GenerateRequest, version: ModelVersion) -> GenerateTask:
    """The job's task, every field checked (INVALID_ARGUMENT naming each bad one); a seed is
    drawn when the request has none, so a retried job makes the same tokens."""
    problems = [*_prompt_problems(request.prompt, version), *_sampling_problems(request),
                *_stop_problems(list(request.stop))]
    if len(request.request_id.encode()) > MAX_REQUEST_ID_BYTES:
        problems.append(FieldViolation("request_id", f"is over {MAX_REQUEST_ID_BYTES} bytes"))
    if problems:
        listed = "; ".join(f"{p.field} {p.description}" for p in problems[:3])
        raise InvalidArgument(f"bad generation request for model {shown(request.model)}: "
                              f"{listed}", violations=tuple(problems))
    check_priority(request.priority)
    return GenerateTask(
        request_id=request.request_id, prompt=request.prompt, max_tokens=request.max_tokens,
        temperature=request.temperature, top_k=request.top_k,
        top_p=request.top_p if request.HasField("top_p") else 1.0,
        seed=request.seed if request.HasField("seed") else secrets.randbits(63),
        stop=request.stop)
