"""`python -m scheduler`: run the scheduler daemon until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from runtime import metrics
from runtime.health import serve_health
from runtime.logs import configure_logging
from runtime.process import on_stop_signals
from runtime.process import run as run_loop
from runtime.settings import Settings
from scheduler.daemon import Daemon


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings, "scheduler")
    metrics.start(settings)

    async def run() -> None:
        daemon = Daemon(settings)
        stopping = asyncio.Event()  # health turns NOT_SERVING once the daemon stops

        def stop() -> None:
            stopping.set()
            daemon.stop()

        async with serve_health(settings.health_port, stopping):
            on_stop_signals(stop)
            await daemon.run()

    run_loop(run())


if __name__ == "__main__":
    main()
