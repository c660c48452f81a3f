"""`python -m worker`: run one worker process until SIGTERM/SIGINT (then drain)."""

from __future__ import annotations

import argparse
import asyncio
import os

from runtime import metrics
from runtime.health import serve_health
from runtime.logs import configure_logging
from runtime.process import on_stop_signals
from runtime.process import run as run_loop
from runtime.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker")
    parser.add_argument("--id", help="worker id (default: host-pid-random)")
    args = parser.parse_args()
    settings = Settings.from_env()
    # Before torch is imported: one intra-op thread pool sized to this worker's cores.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(settings.torch_threads, 1)))
    configure_logging(settings, "worker")
    metrics.start(settings)
    from worker.loop import Worker, configure_torch

    configure_torch(settings.torch_threads)

    async def run() -> None:
        worker = Worker(settings, args.id)
        stopping = asyncio.Event()  # health turns NOT_SERVING while the worker drains

        def stop() -> None:
            stopping.set()
            worker.stop()

        async with serve_health(settings.health_port, stopping):
            on_stop_signals(stop)
            await worker.run()

    run_loop(run())


if __name__ == "__main__":
    main()
