"""The one place errors become gRPC statuses: google.rpc.Status with ErrorInfo and details."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from maas import metrics
from maas.errors import ERROR_DOMAIN, MaasError, QueueStorageFull
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


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamHandler = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


async def _abort_for(exc: BaseException, method: str, context: grpc.aio.ServicerContext) -> None:
    """Aborts the call with the status that `exc` stands for."""
    if isinstance(exc, MaasError):
        await context.abort_with_status(to_status(exc))
    if is_out_of_memory(exc):
        metrics.REDIS_ERRORS.labels("gateway").inc()
        log.error("%s: Redis is at maxmemory: %s", method, exc)
        await context.abort_with_status(to_status(QueueStorageFull(
            "the queue's Redis is full (maxmemory reached; nothing was evicted): this request "
            "was not accepted. Retry later; operators: raise maxmemory or add shards",
            retry_delay_s=5.0)))
    if isinstance(exc, TRANSIENT_ERRORS):
        metrics.REDIS_ERRORS.labels("gateway").inc()
        log.warning("%s: Redis unavailable: %s", method, exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE,
                            "the queue (Redis) is unreachable right now; retry shortly")
    log.error("%s failed", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL,
                        "internal error in the gateway; the traceback is in its log")


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
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in inner(request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort_for(exc, method, context)
    return guarded


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every method so that no exception leaves as a bare, unexplained INTERNAL.

    The wrapped handler of each method is built once and reused (the hot path pays no
    allocation per call for it).
    """

    def __init__(self) -> None:
        # method → (the handler seen, its wrapper); a different handler (a refusal made by
        # an earlier interceptor) is wrapped afresh and replaces the entry.
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


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_guard(handler.unary_unary, method),
                                                   **codecs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_guard(handler.stream_unary, method),
                                                    **codecs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guard_stream(handler.unary_stream, method), **codecs)
    return handler
