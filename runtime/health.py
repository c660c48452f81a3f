"""grpc.health.v1 for processes that serve no other gRPC: the worker and the scheduler.

Two services, for Kubernetes' native gRPC probes:
- `""` (readiness): SERVING while the process works, NOT_SERVING once it drains;
- `liveness`: SERVING until the process exits. The server runs on the process's own event
  loop, so a loop that hangs stops answering and the probe fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

LIVENESS = "liveness"
_Status = health_pb2.HealthCheckResponse


class HealthServer:
    """Reports readiness and liveness; a no-op when the port is 0 (disabled)."""

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:
        self._address = f"{host}:{port}"
        self._servicer = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self.port = port

    async def start(self) -> None:
        if self.port == 0:
            return
        self._server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, self._server)
        for name in ("", LIVENESS):
            await self._servicer.set(name, _Status.SERVING)
        self.port = self._server.add_insecure_port(self._address)
        await self._server.start()
        log.info("health on %s", self._address)

    async def drain(self) -> None:
        """Not ready any more (still live)."""
        await self._servicer.set("", _Status.NOT_SERVING)

    async def stop(self) -> None:
        if self._server is not None:
            await self._servicer.enter_graceful_shutdown()
            await self._server.stop(0)

    async def drain_when(self, stopping: asyncio.Event) -> None:
        """Turns NOT_SERVING when `stopping` is set (a task to cancel when done)."""
        await stopping.wait()
        await self.drain()


@contextlib.asynccontextmanager
async def serve_health(port: int, stopping: asyncio.Event) -> AsyncIterator[HealthServer]:
    """A health server for the block: NOT_SERVING once `stopping` is set, gone at the end."""
    server = HealthServer(port)
    await server.start()
    watcher = asyncio.create_task(server.drain_when(stopping), name="health-drain")
    try:
        yield server
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await server.stop()
