"""Handing jobs to a worker that has the memory for them. A job whose version's weights are
larger than this worker's model memory (MAAS_WORKER_MODEL_MEMORY_MB) goes back to the queue
(RELEASE with its attempt refunded) when a live worker that serves the model has a budget
that fits, and this worker leaves the model's stream unread for PAUSE_S, so that a worker
that fits reads it. When no live worker fits, the job stays here and fails MODEL_TOO_LARGE
(worker/cache.py): nothing else could run it.

Why the whole model pauses rather than the one version: a consumer group hands its next
entry to whichever worker reads first, and a reader cannot pass over one entry to take the
next. Pausing the model is what bounds the cost: a job of a version too large here is read
and handed back at most once per PAUSE_S however long the worker that fits is busy (a read,
a START and a RELEASE; never a spin, never an attempt burnt). Meanwhile that worker, which
serves the model too, runs its other versions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from maas.v1.model_service_pb2 import ModelVersion
from runtime import metrics
from scheduler.connection import TRANSIENT_ERRORS
from scheduler.queue import Delivery, JobQueue, Started
from scheduler.workers import WorkerDirectory, cached_bytes, fits, fits_any
from worker.batches import Versions

log = logging.getLogger(__name__)

PAUSE_S = 2.0  # how long the model's stream stays unread after a hand-back
MIB = 1024 * 1024


class Handoff:
    """Decides, per batch, which jobs this worker keeps; remembers the paused models."""

    def __init__(self, worker_id: str, queue: JobQueue, directory: WorkerDirectory,
                 budget_bytes: int, inflight: dict[str, set[Delivery]],
                 count_lost: Callable[[str, int], None]) -> None:
        self._id = worker_id
        self._queue = queue
        self._directory = directory
        self._budget_bytes = budget_bytes
        self._inflight = inflight  # the worker's: a job handed back leaves it
        self._count_lost = count_lost
        self._paused: dict[str, float] = {}  # model → when (monotonic) it is read again

    def is_paused(self, model: str) -> bool:
        until = self._paused.get(model)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._paused[model]
        return False

    def pause_left_s(self) -> float:
        """Seconds until the first paused model is read again (0: none is paused)."""
        return max(0.0, min(self._paused.values(), default=0.0) - time.monotonic())

    def _too_large(self, versions: Versions) -> dict[str, ModelVersion]:
        """The batch's versions whose weights are larger than this worker's model memory."""
        return {v: r for v, r in versions.items() if isinstance(r, ModelVersion)
                and not fits(self._budget_bytes, cached_bytes(r))}

    async def keep(self, model: str, batch: Sequence[Started],
                   versions: Versions) -> list[Started]:
        """The jobs to run here; those of a version too large for this worker that a live
        worker has room for are handed back, and the model paused."""
        if not self._budget_bytes or not (large := self._too_large(versions)):
            return list(batch)  # no budget (the usual case) or all fit: no round trip
        try:
            live = await self._directory.live()
        except TRANSIENT_ERRORS:  # nothing known of the others: as when none fits
            live = []
        elsewhere = {v for v, r in large.items() if fits_any(live, model, cached_bytes(r))}
        handed = [s for s in batch if s.envelope.model_version in elsewhere]
        if not handed:
            return list(batch)  # no worker fits: they fail MODEL_TOO_LARGE here
        for started in handed:
            await self._release(model, started.delivery)
        self._paused[model] = time.monotonic() + PAUSE_S
        metrics.WORKER_JOBS_HANDED_BACK.labels(metrics.model_label(model)).inc(len(handed))
        log.info("handed %d job(s) of %s version(s) %s back to the queue: larger than this "
                 "worker's model memory (%.0f MiB), which a live worker that serves the model "
                 "has room for; not reading %s for %.1fs", len(handed), model,
                 ",".join(sorted(elsewhere)), self._budget_bytes / MIB, model, PAUSE_S)
        return [s for s in batch if s.envelope.model_version not in elsewhere]

    async def _release(self, model: str, delivery: Delivery) -> None:
        """Hands a job back, its attempt refunded; if Redis is away, its lease lapses and the
        reaper queues it again (that attempt counted)."""
        try:
            if not await self._queue.release(self._id, delivery, refund=True):
                self._count_lost(model, 1)
        except TRANSIENT_ERRORS as exc:
            log.warning("cannot hand a job of %s back (%s): its lease will lapse", model, exc)
        finally:
            self._inflight[model].discard(delivery)
