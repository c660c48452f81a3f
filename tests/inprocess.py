"""A real gateway (gateway.server.serve) on its own event loop in a thread, so blocking
clients (maas.Client, tritonclient) can call it from a plain test. No workers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from gateway.server import serve
from runtime.settings import Settings


@contextlib.contextmanager
def running_gateway(redis_url: str, data_dir: Path, **settings: object) -> Iterator[int]:
    """Yields the port of a gateway with these settings; stops it on exit."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    outcome: dict[str, object] = {}

    async def main() -> None:
        try:
            # No worker runs here: requests are queued (tests that want the refusal say "on").
            values: dict[str, object] = {"require_live_worker": "off", **settings}
            async with serve(Settings(redis_url=redis_url, data_dir=data_dir,
                                      shutdown_grace_s=0.5, **values), port=0) as gateway:
                outcome["port"] = gateway.port
                started.set()
                await stop.wait()
        except BaseException as exc:  # surfaced in the test's thread
            outcome["error"] = exc
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(30)
    try:
        if "error" in outcome:
            raise RuntimeError(f"the gateway did not start: {outcome['error']!r}")
        yield int(outcome["port"])  # type: ignore[call-overload]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def mlp_weights() -> bytes:
    """Weights of the default mlp, as safetensors (zeros; only the shapes matter)."""
    shapes = {"layers.0.weight": (256, 64), "layers.0.bias": (256,),
              "layers.2.weight": (256, 256), "layers.2.bias": (256,),
              "layers.4.weight": (10, 256), "layers.4.bias": (10,)}
    return save({k: np.zeros(s, np.float32) for k, s in shapes.items()})
