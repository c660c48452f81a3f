"""A gRPC server built with the gateway's options ends old connections (GOAWAY) and the
client reconnects on its own: the next call arrives from a new client port."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.server import grpc_options


class Peers(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def record(request, context):  # type: ignore[no-untyped-def]
            self.seen.append(context.peer())
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            record, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


async def peers_of_two_calls(max_connection_age_s: float) -> list[str]:
    peers = Peers()
    server = grpc.aio.server(interceptors=[peers],
                             options=grpc_options(1 << 20, max_connection_age_s))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(2):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                await asyncio.sleep(1.0)
    finally:
        await server.stop(0)
    return peers.seen


async def test_an_old_connection_is_replaced() -> None:
    first, second = await peers_of_two_calls(0.3)
    assert first != second, "the client should have reconnected after the maximum age"


async def test_without_an_age_the_connection_stays() -> None:
    first, second = await peers_of_two_calls(0)
    assert first == second
