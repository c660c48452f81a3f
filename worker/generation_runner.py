"""GenerationSlots: the worker's generation jobs, run with continuous batching.

The claim loop hands each started generation job to the runner of its model version
(`offer`) and goes on claiming; a runner is a task that lives while it has jobs. Each turn of
a runner: admit waiting jobs into the free slots (prefill), one decoding step of the whole
batch (worker/generation.py, in the torch thread), then one pipelined Redis round trip that
writes every sequence's token event and reads every job's cancel mark and owner
(scheduler/generation.py); a cancelled job leaves the batch at once, and the jobs that ended
are completed through the queue's fenced COMPLETE (one script call). Leases are renewed by
the worker's heartbeat while the jobs sit in `inflight`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from maas.v1.model_service_pb2 import ModelVersion
from runtime.queue.v1.queue_pb2 import (
    GenerateOutput,
    GenerationEvent,
    JobError,
    JobResult,
    JobState,
)
from scheduler.connection import TRANSIENT_ERRORS
from scheduler.generation import GenerationEvents
from scheduler.queue import Delivery, JobQueue, Started
from worker.cache import ModelCache
from worker.generation import GenerationEngine, StepEvent

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
RETRY_S = 0.2  # pause after a Redis error before the next step


class GenerationRunner:
    """The jobs of one model version: waiting, then in the engine's batch."""

    def __init__(self, slots: GenerationSlots, version: ModelVersion) -> None:
        self._slots = slots
        self.version = version
        self.waiting: list[Started] = []
        self.jobs: dict[str, Started] = {}  # in the engine, by job id
        self._admitted_us: dict[str, int] = {}  # when each joined the batch
        self._engine: GenerationEngine | None = None

    @property
    def size(self) -> int:
        return len(self.waiting) + len(self.jobs)

    async def run(self) -> None:
        try:
            while self.waiting or self.jobs:
                try:
                    await self._turn()
                except TRANSIENT_ERRORS as exc:  # the leases lapse if it lasts: jobs rerun
                    log.warning("generation on %s: Redis unavailable (%s)", self.version.model,
                                exc)
                    await asyncio.sleep(RETRY_S)
        finally:
            self._slots.ended(self)

    async def _turn(self) -> None:
        await self._admit()
        if not self.jobs:
            return
        engine = self._engine
        assert engine is not None
        try:
            events = await self._slots.in_torch(engine.step)
        except Exception as exc:  # the per-job boundary: the model failed the whole batch
            log.exception("generation step failed on %s", self.version.model)
            await self._fail(list(self.jobs.values()), "INTERNAL", "MODEL_FAILED",
                             f"the model raised: {exc}")
            for key in engine.keys:
                engine.drop(key)
            return
        await self._publish(engine, events)

    async def _admit(self) -> None:
        """Waiting jobs take the free slots (the model loaded on the first)."""
        if not self.waiting:
            return
        if self._engine is None:
            try:
                self._engine = await self._slots.in_torch(self._slots.engine_for, self.version)
            except Exception as exc:  # a version that cannot load fails its jobs
                log.exception("cannot load %s:%s", self.version.model, self.version.version)
                jobs, self.waiting = self.waiting, []
                await self._fail(jobs, "FAILED_PRECONDITION", "MODEL_LOAD_FAILED",
                                 f"the worker could not load {self.version.model}: {exc}")
                return
        engine = self._engine
        joining = self.waiting[:engine.free_slots]
        del self.waiting[:len(joining)]
        refused = await self._slots.in_torch(_add_all, engine, joining)
        now_us = int(time.time() * 1e6)
        for started in joining:
            if started.delivery.job_id not in refused:
                self.jobs[started.delivery.job_id] = started
                self._admitted_us[started.delivery.job_id] = now_us
        await self._fail([s for s in joining if s.delivery.job_id in refused],
                         "INVALID_ARGUMENT", "INVALID_ARGUMENT", "", refused)

    async def _publish(self, engine: GenerationEngine, events: list[StepEvent]) -> None:
        """One round trip for the step's events and every running job's marks; then the
        cancelled and lost jobs leave, and the ended ones complete."""
        marks = await self._slots.events.publish(
            self.version.model, self._slots.worker_id,
            [(e.key, self._event(e)) for e in events], engine.keys)
        for job_id in marks.cancelled | marks.lost:
            engine.drop(job_id)
        lost = [self.jobs.pop(j) for j in marks.lost]
        for job_id in marks.lost:
            self._admitted_us.pop(job_id, None)
        self._slots.release([s.delivery for s in lost])
        ended = [(self.jobs.pop(e.key), e) for e in events if e.finish]
        cancelled = [(self.jobs.pop(j), None) for j in marks.cancelled]
        if ended or cancelled:
            await self._complete([(s, self._result(s, e)) for s, e in [*ended, *cancelled]])

    def _event(self, event: StepEvent) -> GenerationEvent:
        return GenerationEvent(attempt=self.jobs[event.key].attempt, index=event.index,
                               token_ids=event.token_ids, text=event.text,
                               is_last=bool(event.finish))

    def _result(self, started: Started, event: StepEvent | None) -> JobResult:
        """A finished job's result; a cancelled one's (None) is dropped by COMPLETE."""
        admitted_us = self._admitted_us.pop(started.delivery.job_id, 0)
        result = JobResult(job_id=started.delivery.job_id, worker_id=self._slots.worker_id,
                           attempt=started.attempt, state=JobState.JOB_STATE_SUCCEEDED,
                           batch_size=len(self.jobs) + 1,  # the batch it left
                           queue_us=max(0, admitted_us - started.envelope.enqueue_unix_ms * 1000),
                           compute_us=max(0, int(time.time() * 1e6) - admitted_us))
        if event is not None:
            result.generate.CopyFrom(GenerateOutput(
                token_ids=event.all_tokens, text=event.full_text, finish_reason=event.finish,
                prompt_tokens=event.prompt_tokens, stop=event.stop))
        return result

    async def _fail(self, jobs: Sequence[Started], code: str, reason: str, message: str,
                    messages: dict[str, str] | None = None) -> None:
        for s in jobs:
            self.jobs.pop(s.delivery.job_id, None)
            self._admitted_us.pop(s.delivery.job_id, None)
        await self._complete([(s, JobResult(
            job_id=s.delivery.job_id, worker_id=self._slots.worker_id, attempt=s.attempt,
            state=JobState.JOB_STATE_FAILED, error=JobError(
                code=code, reason=reason,
                message=(messages or {}).get(s.delivery.job_id, message)))) for s in jobs])

    async def _complete(self, done: list[tuple[Started, JobResult]]) -> None:
        if not done:
            return
        try:
            recorded = await self._slots.queue.complete(
                self._slots.worker_id, [(s.delivery, r) for s, r in done])
        finally:
            self._slots.release([s.delivery for s, _ in done])
        if not all(recorded):
            log.warning("lost the lease of %d generation jobs of %s: their results were "
                        "dropped", recorded.count(False), self.version.model)


def _add_all(engine: GenerationEngine, joining: Sequence[Started]) -> dict[str, str]:
    """In the torch thread: prefills each job; returns why the refused ones were refused."""
    refused = {}
    for started in joining:
        try:
            engine.add(started.delivery.job_id, started.envelope.generate)
        except ValueError as exc:
            refused[started.delivery.job_id] = str(exc)
    return refused


class GenerationSlots:
    """The worker's generation runners, by model version; what the claim loop asks of them."""

    def __init__(self, worker_id: str, queue: JobQueue, events: GenerationEvents,
                 cache: ModelCache, torch: ThreadPoolExecutor,
                 inflight: dict[str, set[Delivery]], max_sequences: int) -> None:
        self.worker_id = worker_id
        self.queue = queue
        self.events = events
        self._cache = cache
        self._torch = torch
        self._inflight = inflight  # the worker's, whose heartbeat renews these leases
        self.max_sequences = max_sequences
        self._runners: dict[tuple[str, str], GenerationRunner] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def room(self, model: str) -> int:
        """How many more jobs of the model it takes now (its runners' batches are full)."""
        held = sum(r.size for (m, _), r in self._runners.items() if m == model)
        return max(0, self.max_sequences - held)

    def offer(self, started: Sequence[Started], versions: dict[str, ModelVersion],
              spawn: Spawn) -> None:
        """Hands started generation jobs to their version's runner (started if none)."""
        for s in started:
            version = versions[s.envelope.model_version]
            key = (version.model, version.version)
            runner = self._runners.get(key)
            if runner is None:
                runner = self._runners[key] = GenerationRunner(self, version)
                runner.waiting.append(s)
                task = spawn(runner.run())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                runner.waiting.append(s)

    async def drain(self) -> None:
        """Returns once every generation in hand has ended (a draining worker's last)."""
        while self._tasks:
            await asyncio.gather(*self._tasks)

    def ended(self, runner: GenerationRunner) -> None:
        key = (runner.version.model, runner.version.version)
        if self._runners.get(key) is runner:
            del self._runners[key]

    def release(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            self._inflight[d.model].discard(d)

    def engine_for(self, version: ModelVersion) -> GenerationEngine:
        """In the torch thread: the version from the cache, in an engine of its own."""
        return GenerationEngine(self._cache.load(version).module, self.max_sequences)

    async def in_torch(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._torch, fn, *args)
