"""A gateway's graceful shutdown: refuse new calls with a retryable status, finish the rest.

gRPC's own `server.stop(grace)` cancels the calls that reach it while it stops: their
clients see CANCELLED, which no client may safely retry. So a draining gateway first turns
NOT_SERVING and answers every new call itself with UNAVAILABLE + RetryInfo (the call never
started: safe to send again, here after a restart or to another gateway), waits for the
inference calls in flight, stays quiet a moment so that retrying clients back off, and
only then stops the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health

from gateway.errors import refusal
from maas.errors import Unavailable

log = logging.getLogger(__name__)

RETRY_DELAY_S = 0.5  # what refused callers are told to wait: longer than QUIET_S
QUIET_S = 0.2  # refusing before the server stops, so that no call is in flight then
OPEN_PREFIX = "/grpc.health.v1.Health/"  # probes still get NOT_SERVING, not UNAVAILABLE


def _draining() -> Unavailable:
    """What a new call is told while the gateway drains (answered like any error)."""
    return Unavailable(
        "this gateway is shutting down; retry (another gateway, or this one once restarted)",
        retry_delay_s=RETRY_DELAY_S)


class DrainInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Lets calls through until `is_draining`; then refuses new ones (health excepted)."""

    def __init__(self) -> None:
        self.is_draining = False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if (not self.is_draining or handler is None
                or handler_call_details.method.startswith(OPEN_PREFIX)):
            return handler
        return refusal(handler, _draining(), handler_call_details.method)


async def drain(server: grpc.aio.Server, health_servicer: health.aio.HealthServicer,
                gate: DrainInterceptor, in_flight: Callable[[], int], grace_s: float) -> None:
    """NOT_SERVING and refusing at once; in-flight inference finishes within the grace."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    gate.is_draining = True
    await health_servicer.enter_graceful_shutdown()
    for _ in range(int(grace_s * 100) + 1):  # polled: shutdown only, 10 ms steps
        if not in_flight() or loop.time() >= deadline:
            break
        await asyncio.sleep(0.01)
    left = in_flight()
    await asyncio.sleep(min(QUIET_S, max(0.0, deadline - loop.time())))
    log.info("drained: %d inference calls left at the grace's end; stopping", left)
    await server.stop(max(0.0, deadline - loop.time()))
