"""`python -m scheduler`: run the scheduler daemon until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from maas.logs import configure_logging
from maas.process import on_stop_signals
from maas.settings import Settings
from scheduler.daemon import Daemon


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings, "scheduler")

    async def run() -> None:
        daemon = Daemon(settings)
        on_stop_signals(daemon.stop)
        await daemon.run()

    asyncio.run(run())


if __name__ == "__main__":
    main()
