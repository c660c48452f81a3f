"""Every error class crosses a real gRPC call intact: raised in a servicer (unary or
streaming) or refused by an interceptor, it reaches the SDK as the same class, with its code,
reason, message and details (BadRequest, RetryInfo, QuotaFailure) — all through the gateway's
one path (gateway/errors.py: `classify`, `to_status`, `refusal`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.errors import INTERNAL_MESSAGE, ErrorInterceptor, refusal
from maas import errors
from maas.rpc import from_rpc_error

SERVICE = "maas.test.Errors"
SHAPES = ("Unary", "ServerStream", "ClientStream", "Bidi")
REFUSE_KEY = "x-refuse-with"  # metadata: the class the refusing interceptor answers with
VIOLATIONS = (errors.FieldViolation("inputs[0].shape", "dim 3 does not fit [-1, 4]"),)
QUOTA = (errors.QuotaViolation("tenant:acme", "MAAS_TENANT_RATE_PER_S=5 calls per second"),)
CLASSES = sorted((v for v in vars(errors).values()
                  if isinstance(v, type) and issubclass(v, errors.MaasError)),
                 key=lambda cls: cls.__name__)  # the whole tree, its root included


def raised(name: bytes) -> BaseException:
    """The exception a request names: a MaasError class, or one of the gateway's own faults."""
    faults: dict[bytes, BaseException] = {b"RuntimeError": RuntimeError("secret detail"),
                                          b"RedisDown": RedisConnectionError("refused")}
    if name in faults:
        return faults[name]
    cls: type[errors.MaasError] = getattr(errors, name.decode())
    return cls("what happened", violations=VIOLATIONS, retry_delay_s=0.25,
               quota_violations=QUOTA)


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise raised(request)


async def server_stream(request: bytes, context: grpc.aio.ServicerContext,
                        ) -> AsyncIterator[bytes]:
    yield b"first"  # the failure comes mid-stream
    raise raised(request)


async def client_stream(requests: AsyncIterator[bytes],
                        context: grpc.aio.ServicerContext) -> bytes:
    async for request in requests:
        raise raised(request)
    return b""


async def bidi(requests: AsyncIterator[bytes],
               context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield b"first"
        raise raised(request)


class RefusingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses a call as auth and drain do: `refusal` with a MaasError, before the servicer."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        name = dict(details.invocation_metadata or ()).get(REFUSE_KEY)
        handler = await continuation(details)
        if name is None:
            return handler
        err = raised(name.encode())
        assert isinstance(err, errors.MaasError)
        return refusal(handler, err, details.method)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.Channel]:
    """A blocking channel to a test server behind the gateway's ErrorInterceptor.

    Blocking, as tritonclient's and the sync SDK's: grpc.aio's client may report a stream the
    server ends before the client half-closes as INTERNAL (grpc/grpc#36066)."""
    server = grpc.aio.server(interceptors=[RefusingInterceptor(), ErrorInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(None)


def call(channel: grpc.Channel, shape: str, request: bytes,
         metadata: tuple[tuple[str, str], ...]) -> None:
    """One call of `shape`, read to its end."""
    method = f"/{SERVICE}/{shape}"
    if shape == "Unary":
        channel.unary_unary(method)(request, metadata=metadata, timeout=5)
    elif shape == "ClientStream":
        channel.stream_unary(method)(iter([request]), metadata=metadata, timeout=5)
    elif shape == "ServerStream":
        list(channel.unary_stream(method)(request, metadata=metadata, timeout=5))
    else:
        list(channel.stream_stream(method)(iter([request]), metadata=metadata, timeout=5))


async def failure(channel: grpc.Channel, shape: str, name: str,
                  metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError:
    """The RpcError of one call of `shape` whose request names `name` (the server runs on
    this event loop, the blocking call in a thread)."""
    try:
        await asyncio.to_thread(call, channel, shape, name.encode(), metadata)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{shape} {name}: the call succeeded")


def assert_same_error(back: errors.MaasError, cls: type[errors.MaasError]) -> None:
    assert type(back) is cls
    assert (back.code, back.reason, back.message) == (cls.code, cls.reason, "what happened")
    assert (back.violations, back.quota_violations) == (VIOLATIONS, QUOTA)
    assert back.retry_delay_s == 0.25


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
async def test_raised_in_a_servicer_the_sdk_gets_the_same_class(
        channel: grpc.Channel, shape: str, cls: type[errors.MaasError]) -> None:
    exc = await failure(channel, shape, cls.__name__)
    assert exc.code() == cls.code
    assert_same_error(from_rpc_error(exc), cls)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
async def test_refused_by_an_interceptor_the_sdk_gets_the_same_class(
        channel: grpc.Channel, shape: str, cls: type[errors.MaasError]) -> None:
    exc = await failure(channel, shape, "RuntimeError", ((REFUSE_KEY, cls.__name__),))
    assert_same_error(from_rpc_error(exc), cls)


def error_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    (raw,) = [v for k, v in exc.trailing_metadata() or () if k == "grpc-status-details-bin"]
    (detail,) = status_pb2.Status.FromString(raw).details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info


@pytest.mark.parametrize("shape", SHAPES)
async def test_an_unexpected_exception_is_a_short_internal(
        channel: grpc.Channel, shape: str, caplog: pytest.LogCaptureFixture) -> None:
    exc = await failure(channel, shape, "RuntimeError")
    back = from_rpc_error(exc)
    assert type(back) is errors.MaasError
    assert (back.code, back.message) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    assert (error_info(exc).reason, error_info(exc).domain) == ("INTERNAL", errors.ERROR_DOMAIN)
    # The traceback is logged once, in the gateway's log only.
    logged = [r for r in caplog.records if r.exc_info and "secret detail" in str(r.exc_info[1])]
    assert len(logged) == 1


@pytest.mark.parametrize("shape", SHAPES)
async def test_redis_away_is_unavailable_with_error_info(channel: grpc.Channel,
                                                         shape: str) -> None:
    exc = await failure(channel, shape, "RedisDown")
    back = from_rpc_error(exc)
    assert type(back) is errors.Unavailable
    assert error_info(exc).reason == "UNAVAILABLE"
