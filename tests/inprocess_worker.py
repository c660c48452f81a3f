"""A real worker (worker.loop.Worker) on its own event loop in a thread, beside
`tests.inprocess.running_gateway`: the whole inference path without starting processes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from runtime.settings import Settings


@contextlib.contextmanager
def running_worker(redis_url: str, data_dir: Path, **settings: object) -> Iterator[None]:
    """Runs one worker (no training slot) until the block exits; then drains it."""
    from worker.loop import Worker

    loop = asyncio.new_event_loop()
    holder: dict[str, Worker] = {}
    ready = threading.Event()

    async def main() -> None:
        worker = Worker(Settings(redis_url=redis_url, data_dir=data_dir, training_slots=0,
                                 **settings), worker_id="w-test")  # type: ignore[arg-type]
        holder["worker"] = worker
        ready.set()
        await worker.run()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(30)
    try:
        yield
    finally:
        if "worker" in holder:
            loop.call_soon_threadsafe(holder["worker"].stop)
        thread.join(30)
        loop.close()
