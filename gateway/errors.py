"""The one place errors become gRPC statuses: google.rpc.Status with ErrorInfo and details."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from maas.errors import ERROR_DOMAIN, MaasError
from scheduler.connection import TRANSIENT_ERRORS

log = logging.getLogger(__name__)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(err: MaasError) -> grpc.Status:
    """A MaasError as a rich gRPC status (ErrorInfo, BadRequest, RetryInfo)."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN))]
    if err.violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in err.violations])))
    if err.retry_delay_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(err.retry_delay_s * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    code = getattr(code_pb2, err.code.name)
    return rpc_status.to_status(status_pb2.Status(code=code, message=err.message, details=details))


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _guard(inner: Handler, method: str) -> Handler:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await inner(request, context)
        except MaasError as err:
            await context.abort_with_status(to_status(err))
        except TRANSIENT_ERRORS as exc:
            log.warning("%s: Redis unavailable: %s", method, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "the queue (Redis) is unreachable right now; retry shortly")
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("%s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL,
                                "internal error in the gateway; the traceback is in its log")
    return guarded


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary method so no exception leaves as a bare INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _guard(handler.unary_unary, handler_call_details.method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
