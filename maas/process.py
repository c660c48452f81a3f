"""What every maas service process does at start: settings, logging, signals."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable


def on_stop_signals(stop: Callable[[], None]) -> None:
    """Calls `stop` on SIGTERM or SIGINT (graceful shutdown of the running loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
