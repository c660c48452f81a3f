"""The one place errors become gRPC statuses: google.rpc.Status with ErrorInfo and details.

`classify` decides which MaasError any exception is answered with; `to_status` makes it a
rich status. Every path that answers with an error goes through them: the ErrorInterceptor
(every method, unary and streaming), the in-band answers of ModelStreamInfer
(gateway/streaming.py), and the refusals of the auth and drain interceptors (`refusal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from maas.errors import ERROR_DOMAIN, MaasError, QueueStorageFull, Unavailable
from runtime import metrics
from scheduler.connection import TRANSIENT_ERRORS, is_out_of_memory

log = logging.getLogger(__name__)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(err: MaasError) -> grpc.Status:
    """A MaasError as a rich gRPC status (ErrorInfo, BadRequest, QuotaFailure, RetryInfo)."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN))]
    if err.violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in err.violations])))
    if err.quota_violations:
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(subject=q.subject, description=q.description)
            for q in err.quota_violations])))
    if err.retry_delay_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(err.retry_delay_s * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    code = getattr(code_pb2, err.code.name)
    return rpc_status.to_status(status_pb2.Status(code=code, message=err.message, details=details))


INTERNAL_MESSAGE = "internal error in the gateway; the traceback is in its log"


def classify(exc: BaseException) -> MaasError:
    """The MaasError a caller is answered with for `exc`: the one place a status is decided.

    A MaasError stands for itself; Redis at maxmemory is QUEUE_STORAGE_FULL and Redis away is
    UNAVAILABLE (both retryable); anything else is INTERNAL with a short message (the
    traceback goes to the log only: `log_failure`). Transport-free: no gRPC context needed.
    """
    if isinstance(exc, MaasError):
        return exc
    err: MaasError
    if is_out_of_memory(exc):
        err = QueueStorageFull(
            "the queue's Redis is full (maxmemory reached; nothing was evicted): this request "
            "was not accepted. Retry later; operators: raise maxmemory or add shards",
            retry_delay_s=5.0)
    elif isinstance(exc, TRANSIENT_ERRORS):
        err = Unavailable("the queue (Redis) is unreachable right now; retry shortly")
    else:
        err = MaasError(INTERNAL_MESSAGE)
    err.__cause__ = exc
    return err


def log_failure(where: str, exc: BaseException, err: MaasError) -> None:
    """Logs a failure once, where it is answered: Redis trouble (counted too) and the
    traceback of an unexpected exception; a MaasError is an answer, not a fault."""
    if err is exc:
        return
    if isinstance(err, QueueStorageFull):
        metrics.REDIS_ERRORS.labels("gateway").inc()
        log.error("%s: Redis is at maxmemory: %s", where, exc)
    elif isinstance(err, Unavailable):
        metrics.REDIS_ERRORS.labels("gateway").inc()
        log.warning("%s: Redis unavailable: %s", where, exc)
    else:
        log.error("%s failed", where, exc_info=exc)


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamHandler = Callable[[Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]]


async def _abort_for(exc: BaseException, method: str, context: grpc.aio.ServicerContext) -> None:
    """Aborts the call with the status that `exc` stands for."""
    err = classify(exc)
    log_failure(method, exc, err)
    await context.abort_with_status(to_status(err))


def _guard(inner: Handler, method: str) -> Handler:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await inner(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort_for(exc, method, context)
    return guarded


def _guard_stream(inner: StreamHandler, method: str) -> StreamHandler:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        try:
            async with contextlib.aclosing(inner(request, context)) as items:
                async for item in items:
                    yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort_for(exc, method, context)
    return guarded


def _raising(err: MaasError, is_streaming: bool) -> Handler | StreamHandler:
    """A method body that fails with `err` (an async generator for streaming responses)."""
    async def fail(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise err

    async def fail_stream(request: Any,
                          context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        raise err
        yield  # pragma: no cover  (makes this an async generator)

    return fail_stream if is_streaming else fail


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every method so that no exception leaves as a bare, unexplained INTERNAL: each
    becomes the status `classify` decides.

    The wrapped handler of each method is built once and reused (the hot path pays no
    allocation per call for it).
    """

    def __init__(self) -> None:
        # method → (the handler seen, its wrapper); a handler other than the one seen (one
        # made per call by an interceptor placed after this one) is wrapped afresh and
        # replaces the entry. Auth and drain refuse with `refusal`, wrapped already.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        seen = self._wrapped.get(method)
        if seen is not None and seen[0] is handler:
            return seen[1]
        wrapped = _wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def refusal(handler: grpc.RpcMethodHandler | None, err: MaasError,
            method: str) -> grpc.RpcMethodHandler | None:
    """A handler of `handler`'s shape that answers every call with `err`, through the same
    path as every other error: how an interceptor (auth, drain) refuses a call."""
    return None if handler is None else _wrap(handler, method, refused_with=err)


# (the handler's attribute, its factory, whether responses stream)
_SHAPES = (("unary_unary", grpc.unary_unary_rpc_method_handler, False),
           ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
           ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
           ("stream_stream", grpc.stream_stream_rpc_method_handler, True))


def _wrap(handler: grpc.RpcMethodHandler, method: str,
          refused_with: MaasError | None = None) -> grpc.RpcMethodHandler:
    """`handler` (or, given `refused_with`, a body raising it) guarded by `_abort_for`."""
    for attribute, make, is_streaming in _SHAPES:
        inner = getattr(handler, attribute)
        if inner is None:
            continue
        if refused_with is not None:
            inner = _raising(refused_with, is_streaming)
        guard = _guard_stream if is_streaming else _guard
        return make(guard(inner, method), request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
    return handler
