"""`python -m scheduler`: run the scheduler daemon until SIGTERM/SIGINT."""

from __future__ import annotations

from maas.logs import configure_logging
from maas.process import on_stop_signals
from maas.process import run as run_loop
from maas.settings import Settings
from scheduler.daemon import Daemon


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings, "scheduler")

    async def run() -> None:
        daemon = Daemon(settings)
        on_stop_signals(daemon.stop)
        await daemon.run()

    run_loop(run())


if __name__ == "__main__":
    main()
