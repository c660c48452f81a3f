"""Triton's ModelStreamInfer: many v2 requests pipelined on one bidirectional stream.

Each request read from the stream is answered by its own task, through the same path as
ModelInfer, without waiting for the ones before it; responses are written as they complete
(each carries its request `id`). A request that fails is answered in-band: a response with
`error_message` (and the request's id in `infer_response.id`), and the stream stays open; the
error is the one `gateway.errors.classify` decides, as for any call.

- Backpressure: at most `max_in_flight` requests are in flight (queued, running, or answered
  but not yet written); beyond it the stream is not read, so HTTP/2 flow control slows the
  client down.
- Decoupled models (`decoupled`): a request the function takes (a generation: gateway/
  decoupled.py) is answered by many responses, written as they come; it holds its place
  among the `max_in_flight` until its last one is written.
- Client half-close: the requests in flight are answered, then the stream ends (OK).
- Client cancel (or the stream's deadline): every request in flight is cancelled; queued
  jobs end CANCELLED (or EXPIRED) and never run.
- Keys and limits (`CallGuard`): with auth on the stream re-checks its API key every
  RECHECK_S and ends with UNAUTHENTICATED (requests in flight cancelled) within about a
  second of its revocation; each request after the first takes a token of the tenant's rate
  limit, and one over it is answered in-band with RESOURCE_EXHAUSTED, like Triton's
  per-request errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import grpc

from gateway.auth import RECHECK_S, UNGUARDED, CallGuard
from gateway.errors import classify, log_failure
from maas.errors import MaasError, Unauthenticated
from maas.inference import grpc_service_pb2 as pb
from runtime.cancel import cancel_and_wait
from scheduler.connection import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

# Requests of one stream read and not yet answered; tritonclient pipelines without limit.
MAX_IN_FLIGHT = 128

InferOne = Callable[[pb.ModelInferRequest, grpc.aio.ServicerContext],
                    Awaitable[pb.ModelInferResponse]]
# The responses of a request answered by a decoupled model, or None for any other request.
InferMany = Callable[[pb.ModelInferRequest, grpc.aio.ServicerContext],
                     AsyncIterator[pb.ModelInferResponse] | None]
# An answer to write, and whether it is its request's last (then its place is freed).
Answer = tuple[pb.ModelStreamInferResponse | None, bool]


def error_message(err: MaasError, request_id: str) -> str:
    """A failed request's `error_message`: the gRPC code, the reason to act on, the id
    (tritonclient hands only this text to the callback)."""
    text = f"{err.code.name}: {err.message}"
    if err.reason != err.code.name:
        text += f" [{err.reason}]"
    return f"{text} (request id {request_id!r})" if request_id else text


class InferStream:
    """One ModelStreamInfer call: read, answer concurrently, write as answers come."""

    def __init__(self, requests: AsyncIterator[pb.ModelInferRequest],
                 context: grpc.aio.ServicerContext, infer: InferOne,
                 max_in_flight: int = MAX_IN_FLIGHT, guard: CallGuard = UNGUARDED,
                 decoupled: InferMany | None = None) -> None:
        self._requests = requests
        self._context = context
        self._infer = infer
        self._decoupled = decoupled
        self._guard = guard
        self._slots = asyncio.Semaphore(max_in_flight)
        # Answers, then None once every request is answered (or the reader failed, or was
        # cancelled because the key was revoked).
        self._out: asyncio.Queue[Answer | None] = asyncio.Queue()
        self._revoked: Unauthenticated | None = None

    async def responses(self) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
        reader = asyncio.create_task(self._read(), name="stream-infer-reader")
        watcher = asyncio.create_task(self._watch_key(reader), name="stream-infer-key")
        # The call's end (cancel, deadline, finish) stops the reader and every request.
        self._context.add_done_callback(lambda _: reader.cancel())
        try:
            while (item := await self._out.get()) is not None:
                answer, is_last = item
                if answer is not None:
                    yield answer
                if is_last:
                    self._slots.release()  # answered: one more request may be read
        finally:
            await cancel_and_wait(watcher, reader)
            for task in (watcher, reader):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._revoked is not None:
            raise self._revoked  # the stream's status, made by ErrorInterceptor
        if not reader.cancelled() and (exc := reader.exception()) is not None:
            raise exc

    async def _watch_key(self, reader: asyncio.Task[None]) -> None:
        """Ends the stream once its key is revoked: stops reading and cancels every request
        in flight at once (the stream's end follows). A Redis blip does not end it (the
        requests answer UNAVAILABLE meanwhile); the next look-up decides."""
        while self._guard.has_key:
            await asyncio.sleep(RECHECK_S)
            try:
                await self._guard.check_key()
            except Unauthenticated as err:
                self._revoked = err
                reader.cancel()
                return
            except TRANSIENT_ERRORS as exc:
                log.warning("stream: cannot re-check its API key, Redis unavailable: %s", exc)

    async def _read(self) -> None:
        try:
            async with asyncio.TaskGroup() as answering:
                is_first = True
                async for request in self._requests:
                    await self._slots.acquire()
                    answering.create_task(self._answer(request, is_first))
                    is_first = False
        finally:
            self._out.put_nowait(None)

    async def _answer(self, request: pb.ModelInferRequest, is_first: bool) -> None:
        try:
            if not is_first:  # the stream's own admission paid for its first request
                await self._guard.take()
            many = self._decoupled(request, self._context) if self._decoupled else None
            if many is None:
                answer: pb.ModelStreamInferResponse | None = pb.ModelStreamInferResponse(
                    infer_response=await self._infer(request, self._context))
            else:
                async for response in many:
                    self._out.put_nowait(
                        (pb.ModelStreamInferResponse(infer_response=response), False))
                answer = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the boundary of one request: answered in-band
            err = classify(exc)
            log_failure(f"stream request {request.id!r}", exc, err)
            answer = pb.ModelStreamInferResponse(
                error_message=error_message(err, request.id),
                infer_response=pb.ModelInferResponse(
                    id=request.id, model_name=request.model_name,
                    model_version=request.model_version))
        self._out.put_nowait((answer, True))


def stream_infer(requests: AsyncIterator[pb.ModelInferRequest],
                 context: grpc.aio.ServicerContext, infer: InferOne,
                 guard: CallGuard = UNGUARDED, decoupled: InferMany | None = None,
                 ) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
    """The responses of one ModelStreamInfer call (see the module docstring)."""
    return InferStream(requests, context, infer, guard=guard, decoupled=decoupled).responses()
