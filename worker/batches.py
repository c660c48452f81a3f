"""Running a claimed batch of one model: one forward per version, then one COMPLETE.

Jobs are grouped by version, a retried (possibly poison) job runs alone and last; each
group runs in the torch thread (built-in architectures, worker/executor.py) or in the
version's sandboxed runner (uploaded archives, worker/sandboxed.py), and its results are
recorded fenced on the jobs' attempts. The versions of a batch are resolved once, before
it is dispatched: the same records decide where it runs and what runs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from maas.errors import MaasError, ModelTooLarge
from maas.v1.model_service_pb2 import ModelVersion
from runtime import metrics
from runtime.queue.v1.queue_pb2 import InferTask, JobError, JobResult, JobState
from scheduler.queue import Delivery, JobQueue, Started
from scheduler.registry import ModelRegistry, is_archive
from worker.cache import ModelCache
from worker.executor import run_batch
from worker.explain import is_explain, run_with_explanations
from worker.observe import batch_scope
from worker.sandbox.pool import RunnerPool
from worker.sandboxed import run_sandboxed

log = logging.getLogger(__name__)

# A batch's versions: the record of each, or why it has none (deleted meanwhile: the
# version's jobs fail with it, as a version that cannot load).
Versions = dict[str, ModelVersion | MaasError]


class BatchRunner:
    """Runs started batches and completes them; counts batches, jobs and lost leases."""

    def __init__(self, worker_id: str, queue: JobQueue, registry: ModelRegistry,
                 cache: ModelCache, runners: RunnerPool, quarantine_after: int,
                 inflight: dict[str, set[Delivery]]) -> None:
        self._id = worker_id
        self._queue = queue
        self._registry = registry
        self._cache = cache
        self._runners = runners
        self._quarantine_after = quarantine_after
        self._inflight = inflight  # the worker's, whose heartbeat renews these leases
        self.torch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")
        self.batches = 0
        self.jobs = 0
        self.lost_leases = 0

    async def versions(self, model: str, batch: Sequence[Started]) -> Versions:
        """The record of each version the batch's jobs ask for (registry cache: no round
        trip while fresh)."""
        found: Versions = {}
        for version in {s.envelope.model_version for s in batch}:
            try:
                found[version] = await self._registry.resolve(model, version)
            except MaasError as exc:
                found[version] = exc
        return found

    @staticmethod
    def is_sandboxed(versions: Versions) -> bool:
        """Whether an archive's runner computes (part of) the batch."""
        return any(isinstance(v, ModelVersion) and is_archive(v) for v in versions.values())

    async def process(self, model: str, batch: Sequence[Started], versions: Versions) -> None:
        """Runs started jobs (one forward per model version) and completes them."""
        try:
            for (version, _), started in (await self._isolate_suspects(model, batch)).items():
                try:
                    results = await self._observed(model, version, versions[version], started)
                except ModelTooLarge as exc:  # refused, not tried: no traceback
                    log.warning("cannot run %s:%s: %s", model, version, exc)
                    results = [failed(s, exc.message, exc.reason) for s in started]
                except Exception as exc:  # the per-job boundary: a load failure fails the jobs
                    log.exception("cannot run %s:%s", model, version)
                    results = [failed(s, f"the worker could not load {model}:{version}: {exc}")
                               for s in started]
                recorded = await self._queue.complete(
                    self._id, [(s.delivery, r) for s, r in zip(started, results, strict=True)])
                self.count_lost(model, recorded.count(False))
                self.batches += 1
                self.jobs += len(started)
        finally:
            self._inflight[model].difference_update(s.delivery for s in batch)

    async def _isolate_suspects(self, model: str, batch: Sequence[Started],
                                ) -> dict[tuple[str, str], list[Started]]:
        """Groups to run in order: a forward per version of first-attempt jobs, then at most
        one retried job, alone and last. A retried job lost its last worker and may be a
        poison job: it must not take other jobs down with it, so other retried jobs go back
        to the queue unrun (their attempt refunded) for a later batch."""
        groups: dict[tuple[str, str], list[Started]] = defaultdict(list)
        suspects = [s for s in batch if s.attempt > 1]
        for s in batch:
            if s.attempt <= 1:
                groups[s.envelope.model_version, ""].append(s)
        for s in suspects[1:]:
            if not await self._queue.release(self._id, s.delivery, refund=True):
                self.count_lost(model, 1)
            self._inflight[model].discard(s.delivery)
        if suspects:
            groups[suspects[0].envelope.model_version, suspects[0].delivery.job_id] = suspects[:1]
        return groups

    def count_lost(self, model: str, jobs: int) -> None:
        """Jobs whose lease this worker lost while it held them (the reaper reclaimed them
        to run again): COMPLETE dropped their results, or RELEASE found them gone."""
        if jobs:
            self.lost_leases += jobs
            metrics.WORKER_LOST_LEASES.labels(metrics.model_label(model)).inc(jobs)
            log.warning("lost the lease of %d %s jobs while running them: their results "
                        "were dropped", jobs, model)

    async def _observed(self, model: str, version: str, record: ModelVersion | MaasError,
                        started: Sequence[Started]) -> list[JobResult]:
        """_execute in the batch's log context and trace spans, recorded in the metrics."""
        with batch_scope(model, version, started):
            began = time.perf_counter()
            results = await self._execute(record, started)
            metrics.observe_batch(model, results, time.perf_counter() - began)
            return results

    async def _execute(self, version: ModelVersion | MaasError,
                       started: Sequence[Started]) -> list[JobResult]:
        if isinstance(version, MaasError):
            raise version  # not servable (deleted meanwhile): the jobs fail as unloadable
        explaining = any(is_explain(s) for s in started)
        if is_archive(version):
            if explaining:
                return [failed(s, "Explain is not available for uploaded archives: they run "
                               "sandboxed, without gradients", "EXPLAIN_UNSUPPORTED")
                        for s in started]
            return await run_sandboxed(self._runners, self._registry, version, started,
                                       self._id, self._quarantine_after)
        loop = asyncio.get_running_loop()
        if explaining:  # Captum, one job at a time (worker/explain.py)
            return await loop.run_in_executor(self.torch, self._explain, version, started)
        jobs = [(s.delivery.job_id, s.attempt, s.envelope.enqueue_unix_ms, s.envelope.infer)
                for s in started]
        return await loop.run_in_executor(self.torch, self._infer, version, jobs)

    def _infer(self, version: ModelVersion,
               jobs: Sequence[tuple[str, int, int, InferTask]]) -> list[JobResult]:
        """In the torch thread: the version from the cache (loaded on a miss), one forward.
        One hop from the event loop per batch, loaded or not."""
        return run_batch(self._cache.load(version), jobs, self._id)

    def _explain(self, version: ModelVersion, started: Sequence[Started]) -> list[JobResult]:
        return run_with_explanations(self._cache.load(version), started, self._id)


def failed(started: Started, message: str, reason: str = "MODEL_LOAD_FAILED") -> JobResult:
    return JobResult(job_id=started.delivery.job_id, attempt=started.attempt,
                     state=JobState.JOB_STATE_FAILED,
                     error=JobError(code="FAILED_PRECONDITION", reason=reason,
                                    message=message))
