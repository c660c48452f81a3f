"""What every maas service process does at start: an event loop, signals."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, None]) -> None:
    """Runs a service's main coroutine on uvloop when it is installed (faster I/O)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def on_stop_signals(stop: Callable[[], None]) -> None:
    """Calls `stop` on SIGTERM or SIGINT (graceful shutdown of the running loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
