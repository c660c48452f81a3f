"""GenerationPlane: a generation without a transport. A GenerateRequest and its `Caller` in,
a stream of GenerateResponses out; maas.v1 Generate and the decoupled v2 ModelStreamInfer
(gateway/decoupled.py) only translate.

The path: the model as the caller's tenant sees it (a generative version, serving, a live
worker), the request checked (gateway/plane/generation_request.py) and queued as one job with
a job hash (its cancel mark is read by the worker at every step) whose outcome comes to this
gateway's reply stream. Meanwhile the job's event stream is tailed: each token is sent once,
in index order (a retried attempt's repeats are skipped). The fenced outcome ends the stream:
it holds every token, so any not yet sent go with the final response.

- The caller goes away (cancel, or its deadline): the job is cancelled; a queued one never
  runs, a running one leaves the worker's batch within a step.
- Deadline: the worker ends the generation a margin before it (FINISH_REASON_DEADLINE), so
  the caller reads what was made; no outcome by the deadline is DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from gateway.plane.generation_request import generate_task
from gateway.plane.inference import Caller, InferencePlane
from gateway.replies import ReplyDispatcher
from maas.errors import DeadlineExceeded, FailedPrecondition, by_code_name
from maas.v1.generation_service_pb2 import GenerateFinal, GenerateRequest, GenerateResponse
from maas.v1.model_service_pb2 import ModelVersion
from runtime.generation_spec import is_generative
from runtime.queue.v1.queue_pb2 import GenerationEvent, JobEnvelope, JobKind, JobResult, JobState
from scheduler.connection import TRANSIENT_ERRORS
from scheduler.generation import READ_COUNT, GenerationEvents
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry

BLOCK_MS = 500  # longest wait of one read of a job's events (then the outcome is looked at)
# The worker ends a generation this long before the call's deadline (at most), so that the
# caller still reads the tokens made and the finish reason.
END_MARGIN_S = 1.0
ANSWER_MARGIN_S = 0.05


@dataclass
class Sent:
    """What the caller has been sent of one generation."""

    tokens: int = 0
    text: list[str] = field(default_factory=list)

    def take(self, event: GenerationEvent) -> bool:
        """Whether the event is the next one to send (the tokens it holds come next)."""
        if event.index != self.tokens or not (event.token_ids or event.text):
            return False
        self.tokens += len(event.token_ids)
        self.text.append(event.text)
        return True


class GenerationPlane:
    def __init__(self, inference: InferencePlane, queue: JobQueue, registry: ModelRegistry,
                 replies: ReplyDispatcher, events: GenerationEvents) -> None:
        self._inference = inference
        self._queue = queue
        self._registry = registry
        self._replies = replies
        self._events = events

    async def resolve(self, tenant: str, model: str, version: str) -> ModelVersion:
        """The generative version the caller names: NOT_FOUND (unknown, another tenant's),
        FAILED_PRECONDITION (it does not generate), UNAVAILABLE (unloaded)."""
        resolved = await self._registry.resolve_visible(tenant, model, version)
        if not is_generative(resolved):
            raise FailedPrecondition(
                f"model {model!r} (architecture {resolved.architecture or 'an archive'!r}) "
                "does not generate text: Generate serves generative architectures (gpt); "
                "use ModelInfer for it")
        await self._registry.check_serving(resolved)
        return resolved

    async def is_generative(self, tenant: str, model: str, version: str) -> bool:
        """Whether the version the caller names generates (NOT_FOUND as `resolve`)."""
        return is_generative(await self._registry.resolve_visible(tenant, model, version))

    async def generate(self, request: GenerateRequest,
                       caller: Caller) -> AsyncGenerator[GenerateResponse, None]:
        """The responses of one generation (see the module docstring)."""
        version = await self.resolve(caller.tenant, request.model, request.model_version)
        task = generate_task(request, version)
        await self._inference.require_live_worker(version)
        envelope = self._inference.envelope(version, caller, JobKind.JOB_KIND_GENERATE,
                                            request.priority)
        left_s = envelope.deadline_unix_ms / 1000 - time.time()
        task.end_unix_ms = envelope.deadline_unix_ms - int(
            1000 * min(END_MARGIN_S, max(left_s, 0) / 5))
        envelope.generate.CopyFrom(task)
        envelope.reply_to = self._replies.reply_key(envelope.model)
        header = GenerateResponse(request_id=request.request_id, model=request.model,
                                  model_version=version.version)
        async for response in self._follow(envelope, header):
            yield response

    async def _follow(self, envelope: JobEnvelope,
                      header: GenerateResponse) -> AsyncIterator[GenerateResponse]:
        outcome = self._replies.expect(envelope.job_id, envelope.model)
        left_s = max(0.0, envelope.deadline_unix_ms / 1000 - time.time())
        # No asyncio.timeout here: it would span the yields (and cancel the caller's code).
        until = time.monotonic() + left_s - min(ANSWER_MARGIN_S, left_s / 10)
        submitted = is_over = False
        try:
            await asyncio.wait_for(self._queue.submit(envelope), _left(until))
            submitted = True  # hashed: the worker reads its cancel mark at every step
            sent = Sent()
            async for event in self._tail(envelope, outcome, until):
                if sent.take(event):
                    yield _chunk(header, event)
            result = await asyncio.wait_for(outcome, _left(until))
            is_over = True
        except TimeoutError:
            raise DeadlineExceeded(f"the generation did not end within the deadline "
                                   f"({left_s:.3f}s left at submit)") from None
        finally:
            self._replies.forget(envelope.job_id)
            if submitted and not is_over:  # the caller went away, or its deadline passed
                await self._cancel(envelope)
        yield _final(header, result, sent)

    async def _tail(self, envelope: JobEnvelope, outcome: asyncio.Future[JobResult],
                    until: float) -> AsyncIterator[GenerationEvent]:
        """The job's events until its last one, or its outcome (a job that ended before it
        ran has none; the events written before the outcome are read first, without
        waiting); TimeoutError past `until` (monotonic)."""
        cursor = "0-0"
        while True:
            is_done = outcome.done()
            block_ms = None if is_done else max(1, min(BLOCK_MS, int(_left(until) * 1000)))
            events, cursor = await self._events.read(envelope.model, envelope.job_id, cursor,
                                                     block_ms)
            for event in events:
                yield event
                if event.is_last:
                    return
            if is_done and len(events) < READ_COUNT:
                return
            if _left(until) <= 0:
                raise TimeoutError

    async def _cancel(self, envelope: JobEnvelope) -> None:
        """Best effort: a queued job never runs, a running one is flagged."""
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await asyncio.shield(self._queue.cancel(envelope.model, envelope.job_id))


def _left(until: float) -> float:
    return max(0.0, until - time.monotonic())


def _chunk(header: GenerateResponse, event: GenerationEvent) -> GenerateResponse:
    response = GenerateResponse(text=event.text, token_ids=event.token_ids, index=event.index)
    response.MergeFrom(header)
    return response


def _final(header: GenerateResponse, result: JobResult, sent: Sent) -> GenerateResponse:
    """The last response: the tokens not sent yet (from the outcome) and why it ended."""
    if result.state != JobState.JOB_STATE_SUCCEEDED:
        raise by_code_name(result.error.code or "CANCELLED", result.error.message
                           or f"the generation ended {JobState.Name(result.state)[10:]}",
                           result.error.reason)
    out = result.generate
    response = GenerateResponse(
        text=out.text[len("".join(sent.text)):], token_ids=out.token_ids[sent.tokens:],
        index=sent.tokens, final=GenerateFinal(
            finish_reason=out.finish_reason, prompt_tokens=out.prompt_tokens,
            completion_tokens=len(out.token_ids), stop=out.stop, attempts=result.attempt))
    response.MergeFrom(header)
    return response
