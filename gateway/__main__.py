"""`python -m gateway`: run one gateway process until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging

from gateway.server import serve
from runtime import metrics
from runtime.logs import configure_logging
from runtime.process import on_stop_signals, run
from runtime.settings import Settings

log = logging.getLogger("gateway")


async def main_async(settings: Settings) -> None:
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    async with serve(settings) as gateway:
        print(f"gateway listening on {settings.gateway_host}:{gateway.port}", flush=True)
        await stop.wait()
        log.info("draining (grace %.1fs)", settings.shutdown_grace_s)
        await gateway.drain(settings.shutdown_grace_s)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_buffers() -> None:
    """Every allocation of 1 MiB or more is its own mapping, returned to the system when
    freed. glibc otherwise raises its mmap threshold after large frees (up to 32 MiB), and
    the 8 MiB parts of a model upload, handled in several executor threads, then stay in
    those threads' heaps: the gateway's memory would grow with uploads it no longer holds."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)


def main() -> None:
    map_large_buffers()
    parser = argparse.ArgumentParser(prog="python -m gateway")
    parser.add_argument("--port", type=int, help="listen port (MAAS_GATEWAY_PORT)")
    parser.add_argument("--host", help="listen address (MAAS_GATEWAY_HOST)")
    args = parser.parse_args()
    settings = Settings.from_env(gateway_port=args.port, gateway_host=args.host)
    configure_logging(settings, "gateway")
    metrics.start(settings)
    run(main_async(settings))


if __name__ == "__main__":
    main()
