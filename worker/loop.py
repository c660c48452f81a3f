"""Worker: the claim loop (dynamic batching on the stream), heartbeats, and drain.

A read of up to `max_batch_size` entries *is* the batch: when a read brings more than one
job but fewer than the maximum, the worker waits up to `max_queue_delay_microseconds` for
more (Triton's meaning). A lone job runs at once: nothing else is queued to wait for. A job
too large for this worker's model memory goes to a worker that fits (worker/handoff.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import torch

from maas.errors import MaasError
from maas.v1.model_service_pb2 import ModelVersion
from runtime import metrics
from runtime.artifacts import artifact_store
from runtime.cancel import cancel_and_wait
from runtime.queue.v1.queue_pb2 import WorkerHeartbeat
from runtime.settings import Settings
from scheduler import keys
from scheduler.connection import TRANSIENT_ERRORS, check_server, connect
from scheduler.generation import GenerationEvents
from scheduler.queue import Delivery, JobQueue, Started
from scheduler.registry import ModelRegistry, is_archive
from scheduler.shards import Shards
from scheduler.workers import WorkerDirectory, serves
from worker.batches import BatchRunner, Versions
from worker.cache import ModelCache, pick_device
from worker.generation_runner import GenerationSlots
from worker.handoff import Handoff
from worker.sandbox.pool import RunnerLimits, RunnerPool
from worker.sandboxed import ArchiveVerifier, preload_runners
from worker.training_slot import TrainingSlot

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.id = worker_id or f"w-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._redis = connect(settings.redis_url, max_connections=8)
        self.queue = JobQueue(self._redis, result_ttl_ms=int(settings.infer_result_ttl_s * 1000),
                              shards=Shards(settings.model_shard_counts))
        self._registry = ModelRegistry(self._redis)
        self._directory = WorkerDirectory(self._redis)
        artifacts = artifact_store(settings)
        self.cache = ModelCache(artifacts, pick_device(settings.worker_device),
                                settings.worker_model_memory_mb * 1024 * 1024)
        self._runners = RunnerPool(artifacts, RunnerLimits(
            forward_s=settings.max_forward_ms / 1000, load_s=settings.verify_timeout_s,
            memory_mb=settings.runner_memory_mb, threads=max(settings.torch_threads, 1),
            device=str(self.cache.device)), settings.max_runners)
        self._verifier = ArchiveVerifier(self.id, self._registry, self._runners)
        self._runners_tried: set[tuple[str, str]] = set()
        # Models whose batch runs in a sandboxed runner: not claimed again until it is done.
        self._sandboxed: dict[str, asyncio.Task[None]] = {}
        # How tasks are started: run() hands in its TaskGroup's, so none is left behind.
        self._spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] = \
            asyncio.create_task
        self._pins = settings.worker_model_pins  # empty: every model
        self._models: list[str] = []  # what it serves and reads the streams of
        self._hot: set[str] = set()  # models CLAIMed again at once (see _note_load)
        self._turns: dict[str, int] = defaultdict(int)  # a sharded model's next queue
        self._inflight: dict[str, set[Delivery]] = defaultdict(set)
        self._training = TrainingSlot(self.id, settings, self._redis, self.queue,
                                      self._registry, artifacts,
                                      self._inflight[keys.TRAINING_QUEUE])
        self._batches = BatchRunner(self.id, self.queue, self._registry, self.cache,
                                    self._runners, settings.quarantine_after, self._inflight)
        self._handoff = Handoff(self.id, self.queue, self._directory, self.cache.budget_bytes,
                                self._inflight, self._batches.count_lost)
        # Generation jobs: continuous batching, up to max_batch_size sequences per model.
        events = GenerationEvents(self._redis, int(settings.infer_result_ttl_s * 1000))
        self._generation = GenerationSlots(
            self.id, self.queue, events, self.cache, self._batches.torch, self._inflight,
            settings.max_batch_size)
        self._stopping = asyncio.Event()
        # Set when the model list stops being empty, and by stop(): what an idle worker
        # without models waits for (no polling).
        self._wake = asyncio.Event()
        self._started_ms = int(time.time() * 1000)

    @property
    def batches(self) -> int:
        return self._batches.batches

    @property
    def jobs(self) -> int:
        return self._batches.jobs

    @property
    def lost_leases(self) -> int:
        return self._batches.lost_leases

    def stop(self) -> None:
        """Drain: stop reading, finish the batch in hand, then return from run()."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        log.info("worker %s on %s, serving %s", self.id, self.cache.device,
                 ", ".join(self._pins) or "every model")
        await check_server(self._redis)
        try:
            async with asyncio.TaskGroup() as tasks:
                beat = tasks.create_task(self._heartbeat_loop())
                refresh = tasks.create_task(self._refresh_loop())
                training = (tasks.create_task(self._training.run(self._stopping))
                            if self.settings.training_slots > 0 else None)
                verifying = tasks.create_task(self._verifier.run(self._stopping))
                self._spawn = tasks.create_task
                await self._claim_loop()
                await self.queue.stop_reads()
                await asyncio.gather(*self._sandboxed.values())
                await self._generation.drain()  # their leases renewed meanwhile
                await verifying
                if training is not None:
                    await training  # drains: the job is checkpointed and handed back
                await cancel_and_wait(beat, refresh)
        finally:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._directory.leave(self.id)
            await self._runners.close()
            await self._redis.aclose()
            self._batches.torch.shutdown(wait=True)
            log.info("worker %s stopped after %d batches, %d jobs, %d lost leases", self.id,
                     self.batches, self.jobs, self.lost_leases)

    async def _refresh_loop(self) -> None:
        while True:
            try:
                names = [m for m in await self._registry.model_names()
                         if serves(self._pins, m)]  # MAAS_WORKER_MODELS
                new = sorted(set(names) - set(self._models))
                for name in new:
                    await self.queue.ensure_group(name)
                self._models = names
                if names:
                    self._wake.set()
                for name in new:
                    await self._preload(name)
                await preload_runners(self._registry, self._runners, names,
                                      self._runners_tried)
            except TRANSIENT_ERRORS as exc:
                metrics.REDIS_ERRORS.labels("worker").inc()
                log.warning("cannot list models: %s", exc)
            await asyncio.sleep(1.0)

    async def _preload(self, model: str) -> None:
        """Loads a model's latest version before its first request needs it."""
        try:
            meta = await self._registry.resolve(model)
        except MaasError as exc:  # no servable version yet (an archive being verified)
            log.debug("nothing to preload for %s: %s", model, exc)
            return
        if is_archive(meta):  # a runner starts on the first request
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._batches.torch, self.cache.load,
                                                             meta)
        except Exception as exc:  # a broken version fails its jobs later, not the worker
            log.warning("cannot preload %s: %s", model, exc)

    async def _heartbeat_loop(self) -> None:
        """Renews the leases of the jobs in hand every lease/3.

        What EXTEND could not renew is not a lost lease: the heartbeat runs beside the
        claim loop, so a batch's COMPLETE may run in Redis between this loop's copy of
        `_inflight` and its EXTEND, and a completed entry has left the pending list as a
        reclaimed one has. Reported as lost, these were jobs that ended well (attempt 1,
        never reclaimed). Leases are counted lost where the fence decides: COMPLETE and
        RELEASE (`BatchRunner.count_lost`)."""
        period_s = self.settings.infer_lease_ms / 3000
        while True:
            try:
                await self._directory.beat(self._heartbeat(), ttl_ms=3 * int(period_s * 1000))
                for held in list(self._inflight.values()):
                    await self.queue.extend(self.id, list(held))
            except TRANSIENT_ERRORS as exc:
                metrics.REDIS_ERRORS.labels("worker").inc()
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(period_s)

    def _heartbeat(self) -> WorkerHeartbeat:
        metrics.WORKER_MODEL_MEMORY_BYTES.set(self.cache.size_bytes)
        metrics.WORKER_MODEL_MEMORY_BUDGET_BYTES.set(self.cache.budget_bytes)
        return WorkerHeartbeat(
            worker_id=self.id, hostname=socket.gethostname(), pid=os.getpid(),
            device=str(self.cache.device),
            models=self.cache.loaded_names() + self._runners.loaded_names(),
            started_unix_ms=self._started_ms, batches=self.batches, jobs=self.jobs,
            serves=self._pins, model_memory_bytes=self.cache.size_bytes,
            model_memory_budget_bytes=self.cache.budget_bytes)

    async def _claim_loop(self) -> None:
        """Under load: one CLAIM (read + start) per batch; else: block in XREADGROUP."""
        backoff_s = 0.05
        while not self._stopping.is_set():
            if not self._models:  # until the refresh loop finds one, or stop()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                busy = False
                # Only hot models are claimed at once (_note_load); the others wake the
                # worker through the blocking read below.
                for model in [m for m in self._models if m in self._hot and self._is_free(m)]:
                    started = await self._claim(model, min(self.settings.max_batch_size,
                                                           self._generation.room(model)))
                    busy = busy or bool(started)
                    self._note_load(model, len(started))
                    if started:
                        await self._dispatch(model, await self._top_up(model, started))
                if not busy:
                    await self._wait_for_work()
                backoff_s = 0.05
            except TRANSIENT_ERRORS as exc:
                metrics.REDIS_ERRORS.labels("worker").inc()
                log.warning("queue unreachable (%s); retrying in %.2fs", exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(2 * backoff_s, 2.0)

    async def _claim(self, model: str, count: int) -> list[Started]:
        """CLAIMs up to `count` jobs of a model. A sharded model's queues (scheduler/shards.py)
        are taken in turn: the claim starts at the queue after the one that last gave jobs
        and stops at the first that gives some (one CLAIM per batch, as with one queue), so
        every queue is claimed at least once every N batches and none waits behind another."""
        queues = self.queue.shards.queues(model)
        first = self._turns[model] % len(queues)
        for i in range(len(queues)):
            at = (first + i) % len(queues)
            outcome = await self.queue.claim(self.id, queues[at], count)
            if outcome.runnable:
                self._turns[model] = at + 1
                self._inflight[model].update(s.delivery for s in outcome.runnable)
                return outcome.runnable
        return []

    async def _wait_for_work(self) -> None:
        """Blocks until any model's stream has entries, then starts what it read."""
        free = [m for m in self._models if self._is_free(m)]
        if not free:
            await self._wait_for_free()
            return
        # While runners compute, look again soon: their models come back when they finish.
        deliveries = await self.queue.read(self.id, self.queue.shards.expand(free),
                                           self.settings.max_batch_size,
                                           block_ms=10 if self._sandboxed else 500)
        by_model: dict[str, list[Delivery]] = defaultdict(list)
        for d in deliveries:
            by_model[d.model].append(d)
        for model, batch in by_model.items():
            self._note_load(model, len(batch))
            self._inflight[model].update(batch)
            try:
                runnable = (await self.queue.start(self.id, batch)).runnable
            finally:
                self._inflight[model].difference_update(batch)
            self._inflight[model].update(s.delivery for s in runnable)
            await self._dispatch(model, await self._top_up(model, runnable))

    async def _wait_for_free(self) -> None:
        """No model's jobs may be read now: waits for the first runner to finish, for a
        generation slot (within a decoding step or so), or for a pause to end (or stop())."""
        if self._sandboxed:
            await asyncio.wait(list(self._sandboxed.values()), timeout=0.5,
                               return_when=asyncio.FIRST_COMPLETED)
        elif all(self._handoff.is_paused(m) for m in self._models):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._handoff.pause_left_s())
        else:
            await asyncio.sleep(0.01)

    def _is_free(self, model: str) -> bool:
        """Whether to read the model's jobs now: not while its archive's runner computes a
        batch, nor while its generation batch is full, nor while it is paused after a job
        too large for this worker was handed back."""
        return (model not in self._sandboxed and self._generation.room(model) > 0
                and not self._handoff.is_paused(model))

    def _note_load(self, model: str, jobs: int) -> None:
        """Whether to CLAIM the model again at once (one round trip for read + start) or
        to wait in the blocking XREADGROUP (then START: two). A read of 2+ jobs means
        concurrent callers: more are likely queued by the time the batch is done. A lone
        job means one caller at a time, whose next request follows this reply: claiming
        again would find the stream empty, one wasted CLAIM per request."""
        if jobs >= 2:
            self._hot.add(model)
        else:
            self._hot.discard(model)

    async def _top_up(self, model: str, batch: list[Started]) -> list[Started]:
        """With 2+ jobs in hand and room left, waits max_queue_delay for more (Triton's knob);
        a lone job runs at once: nothing else is queued to wait for."""
        room = self.settings.max_batch_size - len(batch)
        delay_s = self.settings.max_queue_delay_microseconds / 1e6
        if len(batch) < 2 or room <= 0 or delay_s <= 0:
            return batch
        await asyncio.sleep(delay_s)
        try:
            return batch + await self._claim(model, room)
        except TRANSIENT_ERRORS as exc:  # optional: run what is held (nothing may strand it)
            metrics.REDIS_ERRORS.labels("worker").inc()
            log.warning("batch top-up failed (%s); running the %d jobs held", exc, len(batch))
            return batch

    async def _dispatch(self, model: str, batch: Sequence[Started]) -> None:
        """Runs a batch: in place, or, when an archive's runner computes it, in a task of
        its own, so that the worker goes on serving other models meanwhile."""
        versions = await self._batches.versions(model, batch)
        batch = self._offer_generations(await self._handoff.keep(model, batch, versions),
                                        versions)
        if not batch:
            return
        if not self._batches.is_sandboxed(versions):
            await self._batches.process(model, batch, versions)
            return
        self._sandboxed[model] = self._spawn(self._process_apart(model, batch, versions))

    def _offer_generations(self, batch: Sequence[Started], versions: Versions) -> list[Started]:
        """Hands the batch's generation jobs of servable versions to their runners (they
        run beside the claim loop); returns the others."""
        servable = {v: r for v, r in versions.items() if isinstance(r, ModelVersion)}
        generating = [s for s in batch if s.envelope.HasField("generate")
                      and s.envelope.model_version in servable]
        if generating:
            self._generation.offer(generating, servable, self._spawn)
        ids = {s.delivery.job_id for s in generating}
        return [s for s in batch if s.delivery.job_id not in ids]

    async def _process_apart(self, model: str, batch: Sequence[Started],
                             versions: Versions) -> None:
        try:
            await self._batches.process(model, batch, versions)
        except TRANSIENT_ERRORS as exc:  # the leases lapse and the jobs are claimed again
            metrics.REDIS_ERRORS.labels("worker").inc()
            log.warning("cannot complete a batch of %s: %s", model, exc)
        finally:
            self._sandboxed.pop(model, None)
            self._hot.add(model)


def configure_torch(threads: int) -> None:
    """Intra-op threads to fit the cores this worker owns (oversubscription kills latency)."""
    torch.set_num_threads(threads if threads > 0 else len(os.sched_getaffinity(0)))
