"""Uploaded archives on a worker: verified, then served, always in sandboxed runners.

`ArchiveVerifier` takes versions from the verification queue and stores each verdict
(READY or REJECTED with the reasons). `run_sandboxed` runs a batch of a READY archive's
jobs in its runner, on the event loop (the worker's torch thread stays free for other
models): a model that raises fails its jobs (MODEL_FAILED, one job at a time to find the
culprit); a runner that times out or dies fails the whole batch (MODEL_TIMEOUT,
MODEL_CRASHED) without a retry elsewhere, and counts towards the version's quarantine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from maas.errors import MaasError
from maas.v1.model_service_pb2 import ModelVersion, ModelVersionState
from runtime.queue.v1.queue_pb2 import JobError, JobResult, JobState
from scheduler.connection import TRANSIENT_ERRORS
from scheduler.queue import Started
from scheduler.registry import ModelRegistry, check_state, is_archive, is_servable
from worker.executor import batch_inputs, infer_output, split_outputs
from worker.sandbox.pool import (
    ArchiveRefused,
    ModelRaised,
    RunnerFailure,
    RunnerPool,
    RunnerTimeout,
)

log = logging.getLogger(__name__)
_VERIFYING = ModelVersionState.MODEL_VERSION_STATE_VERIFYING
FRESH_S = 120.0


def _failed(started: Started, code: str, reason: str, message: str) -> JobResult:
    return JobResult(job_id=started.delivery.job_id, attempt=started.attempt,
                     state=JobState.JOB_STATE_FAILED,
                     error=JobError(code=code, reason=reason, message=message))


async def _forward(pool: RunnerPool, version: ModelVersion,
                   started: Sequence[Started]) -> list[JobResult]:
    """One forward of the jobs batched; ModelRaised when the model raised."""
    tasks = [s.envelope.infer for s in started]
    outputs = await pool.forward(version, batch_inputs([i.name for i in version.inputs], tasks))
    return [JobResult(job_id=s.delivery.job_id, attempt=s.attempt,
                      state=JobState.JOB_STATE_SUCCEEDED, batch_size=len(started),
                      infer=infer_output(task, arrays))
            for s, task, arrays in zip(started, tasks, split_outputs(version, tasks, outputs),
                                       strict=True)]


async def _forward_each(pool: RunnerPool, version: ModelVersion,
                        started: Sequence[Started]) -> list[JobResult]:
    """One forward per job, after the batch raised: only the culprit fails."""
    results = []
    for s in started:
        try:
            results += await _forward(pool, version, [s])
        except ModelRaised as exc:
            results.append(_failed(s, "INTERNAL", "MODEL_FAILED", f"the model raised: {exc}"))
    return results


async def run_sandboxed(pool: RunnerPool, registry: ModelRegistry, version: ModelVersion,
                        started: Sequence[Started], worker_id: str,
                        quarantine_after: int) -> list[JobResult]:
    """Results of one batch of an archive version's jobs, run in its runner."""
    try:
        check_state(version)
    except MaasError as exc:
        return [_failed(s, exc.code.name, exc.reason, str(exc)) for s in started]
    began = time.perf_counter()
    try:
        try:
            results = await _forward(pool, version, started)
        except ModelRaised as exc:
            results = (await _forward_each(pool, version, started) if len(started) > 1 else
                       [_failed(started[0], "INTERNAL", "MODEL_FAILED",
                                f"the model raised: {exc}")])
    except RunnerFailure as exc:
        results = await _runner_failed(registry, version, started, exc, quarantine_after)
    compute_us = int((time.perf_counter() - began) * 1e6)
    for r in results:
        r.worker_id, r.compute_us = worker_id, compute_us
    return results


async def _runner_failed(registry: ModelRegistry, version: ModelVersion,
                         started: Sequence[Started], exc: RunnerFailure,
                         quarantine_after: int) -> list[JobResult]:
    """Fails the batch (not retried: the model is the cause) and counts the failure."""
    log.warning("%s:%s %s: %s", version.model, version.version, exc.reason, exc)
    code = "DEADLINE_EXCEEDED" if isinstance(exc, RunnerTimeout) else "INTERNAL"
    try:
        count = await registry.record_failure(
            version, f"{exc.reason} {quarantine_after} times (last: {exc})", quarantine_after)
        if count >= quarantine_after:
            log.warning("quarantined %s:%s after %d runner failures", version.model,
                        version.version, count)
    except TRANSIENT_ERRORS as redis_error:
        log.warning("cannot count the failure of %s:%s: %s", version.model, version.version,
                    redis_error)
    return [_failed(s, code, exc.reason, str(exc)) for s in started]


class ArchiveVerifier:
    """Takes archive versions from the verification queue and stores their verdicts."""

    def __init__(self, worker_id: str, registry: ModelRegistry, pool: RunnerPool) -> None:
        self._id = worker_id
        self._registry = registry
        self._pool = pool

    async def run(self, stopping: asyncio.Event) -> None:
        queue = self._registry.verification
        reclaim_ms = int(2 * self._pool.limits.load_s * 1000)
        await queue.ensure_group()
        while not stopping.is_set():
            try:
                task = await queue.take(self._id, block_ms=500, reclaim_after_ms=reclaim_ms)
                if task is None:
                    continue
                version = await self._registry.fresh_version(task.request.model,
                                                             task.request.version)
                if version is not None and version.state == _VERIFYING:
                    await self.verify(version)
                await queue.done(task.entry_id)
            except TRANSIENT_ERRORS as exc:
                log.warning("verification queue unreachable: %s", exc)
                await asyncio.sleep(1.0)

    async def verify(self, version: ModelVersion) -> None:
        """Verifies one version in a runner and stores the verdict."""
        state, reason = ModelVersionState.MODEL_VERSION_STATE_READY, ""
        try:
            loaded = await self._pool.verify(version)
            log.info("verified %s:%s (%s)", version.model, version.version,
                     ", ".join(loaded.confinement))
        except ArchiveRefused as exc:
            state, reason = ModelVersionState.MODEL_VERSION_STATE_REJECTED, str(exc)
        except RunnerFailure as exc:
            state = ModelVersionState.MODEL_VERSION_STATE_REJECTED
            reason = f"loading the archive failed its sandbox ({exc.reason}): {exc}"
        if state != ModelVersionState.MODEL_VERSION_STATE_READY:
            log.warning("rejected %s:%s: %s", version.model, version.version, reason)
        await self._registry.set_state(version, state, reason)


async def preload_runners(registry: ModelRegistry, pool: RunnerPool, models: list[str],
                          tried: set[tuple[str, str]]) -> None:
    """Starts runners for the READY archive versions requests will name (latest and
    aliased), so that a model is loaded before traffic reaches it, as Triton loads a model
    before serving it. Versions registered in the last FRESH_S seconds take the place of the
    least recently used runners; older ones only fill free room (a restarted worker does not
    start and stop a runner per archive it knows). Each version is tried once (`tried`)."""
    for model in models:
        try:
            latest = await registry.resolve(model)
            if not is_archive(latest):
                continue
            numbers = {latest.version, *(await registry.alias_versions(model))}
            for number in sorted(numbers - {v for m, v in tried if m == model}, key=int):
                version = await registry.resolve(model, number)
                is_fresh = time.time() - version.create_time.seconds < FRESH_S
                if not is_servable(version) or not (pool.has_room or is_fresh):
                    continue
                tried.add((model, number))
                await pool.preload(version, may_evict=is_fresh)
        except (MaasError, ArchiveRefused, RunnerFailure) as exc:
            log.info("no runner preloaded for %s: %s", model, exc)
