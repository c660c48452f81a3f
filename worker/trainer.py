"""Runs one leased training job in its own process and reports it through the queue.

The job runs as `python -m worker.training` so that a crash (or an OOM kill) cannot take
the worker down; the child dies with the worker (PDEATHSIG), and a job whose worker died is
re-leased by the reaper and resumes from its last checkpoint in the same job directory.

A job of N replicas runs as a gang (scheduler/gangs.py): the worker that read it is rank 0
and reports for the job exactly as above; the others (`follow`) only run their process,
and every rank's process is killed once the gang breaks (docs/distributed-training.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from maas.v1.training_service_pb2 import (
    CheckpointInfo,
    EpochMetrics,
    TrainingEvent,
    TrainingJob,
    TrainingProgress,
)
from runtime import metrics
from runtime.artifacts import ArtifactStore, write_atomic
from runtime.cancel import cancel_and_wait
from runtime.datasets import BUILTIN_DATASETS
from runtime.process import dying_with_parent
from runtime.queue.v1.queue_pb2 import JobEnvelope
from runtime.training_proto import from_proto
from scheduler.connection import TRANSIENT_ERRORS
from scheduler.datasets import DatasetStore
from scheduler.gangs import GangSeat, GangStore
from scheduler.queue import Delivery, JobQueue, Started
from scheduler.registry import ModelRegistry
from scheduler.training import LeaseLost, TrainingStore, state_event
from worker.gang import advertised_host, follow_formation, guard, lead_formation, rendezvous_address
from worker.observe import job_scope
from worker.training_lineage import register_result

log = logging.getLogger(__name__)
EXIT_INVALID, EXIT_STOPPED = 2, 3
GROUP_TIMEOUT_S = 120.0  # replicas wait this long for each other (and for any collective)
OnLine = Callable[[dict[str, Any]], Awaitable[None]]


async def _ignored(doc: dict[str, Any]) -> None:
    """Lines of ranks > 0 (rank 0 reports for the job)."""


def _event(**kwargs: Any) -> TrainingEvent:
    event = TrainingEvent(**kwargs)
    event.time.GetCurrentTime()
    return event


@dataclass
class _Run:
    """What one attempt has seen so far."""

    job: TrainingJob
    result: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False


class TrainingExecutor:
    def __init__(self, worker_id: str, queue: JobQueue, store: TrainingStore,
                 registry: ModelRegistry, datasets: DatasetStore, artifacts: ArtifactStore,
                 threads: int, gangs: GangStore) -> None:
        self._id = worker_id
        self._gangs = gangs
        self._host = advertised_host()
        self._queue = queue
        self._store = store
        self._registry = registry
        self._datasets = datasets
        self._artifacts = artifacts
        self._threads = threads

    async def take(self, delivery: Delivery, draining: asyncio.Event) -> None:
        """Starts a job read from the training queue: runs it, or leads its gang (rank 0)."""
        start = await self._gangs.start(self._id, delivery)
        if start.envelope is None or start.status not in ("RUN", "FORMING"):
            return
        seat = None
        if start.status == "FORMING":
            gen = await lead_formation(self._gangs, self._id, delivery, draining)
            if not gen:
                return
            seat = GangSeat(delivery.job_id, 0, start.replicas, gen, start.envelope)
        started = Started(delivery, seat.gen if seat else start.attempt, start.envelope)
        with job_scope(started):
            await self.run(started, draining, seat)

    async def follow(self, seat: GangSeat, draining: asyncio.Event) -> None:
        """Runs rank > 0 of a gang: its process only; rank 0 reports for the job."""
        formed = await follow_formation(self._gangs, seat, draining)
        if formed is None:
            return
        addr = await rendezvous_address(self._gangs, formed, self._id, GROUP_TIMEOUT_S)
        if not addr:
            return
        argv = await self._argv(formed.job_id, formed.envelope, [
            "--rank", str(formed.rank), "--world-size", str(formed.size), "--master", addr])
        log.info("training job %s: replica %d of %d (attempt %d)", formed.job_id,
                 formed.rank, formed.size, formed.gen)
        code = await self._supervise(argv, _ignored, draining, lambda: False, formed)
        if code not in (0, EXIT_STOPPED):  # stop the others now, not at their timeout
            log.warning("training job %s: replica %d exited with %d", formed.job_id,
                        formed.rank, code)
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._gangs.beat(formed, self._id, is_broken=True)

    async def run(self, started: Started, draining: asyncio.Event,
                  seat: GangSeat | None = None) -> None:
        """Runs the job to an end: SUCCEEDED, FAILED, CANCELLED, or handed back to the queue."""
        run = _Run(await self._store.get(started.delivery.job_id))
        run.job.state = TrainingJob.RUNNING
        if started.attempt == 1:
            run.job.start_time.GetCurrentTime()
        message = f"attempt {started.attempt}" + (f", {seat.size} replicas" if seat else "")
        try:
            run.cancel_requested = await self._store.update(
                self._id, started.delivery, record=run.job,
                events=(state_event(TrainingJob.RUNNING, message),))
            if run.cancel_requested:
                return await self._finish(started, run, "CANCELLED", "cancelled")
            code = await self._run_child(started, run, draining, seat)
            # Rank 0 only (a gang's ranks share the directory): the last checkpoint reaches
            # the store before the job is handed back or ends.
            await asyncio.to_thread(self._artifacts.save_job_dir, started.delivery.job_id)
            await self._conclude(started, run, code, draining)
        except LeaseLost:
            metrics.TRAINING_FINISHED.labels("LEASE_LOST").inc()
            log.warning("training job %s: lease lost; another worker resumes it",
                        started.delivery.job_id)
        finally:
            metrics.TRAINING_SAMPLES_PER_SECOND.set(0)
            if seat is not None:  # the other ranks see it gone and stop
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await self._gangs.end(seat, self._id)

    async def _run_child(self, started: Started, run: _Run, draining: asyncio.Event,
                         seat: GangSeat | None) -> int:
        extra = ["--rank", "0", "--world-size", str(seat.size)] if seat else []
        argv = await self._argv(started.delivery.job_id, started.envelope, extra)

        async def on_line(doc: dict[str, Any]) -> None:
            if doc.get("type") == "rendezvous" and seat is not None:
                await self._gangs.beat(seat, self._id, addr=f"{self._host}:{doc['port']}")
            else:
                await self._on_line(started, run, doc)

        return await self._supervise(argv, on_line, draining, lambda: run.cancel_requested,
                                     seat)

    async def _supervise(self, argv: list[str], on_line: OnLine, draining: asyncio.Event,
                         cancel_requested: Callable[[], bool], seat: GangSeat | None) -> int:
        """Runs the process to its exit; SIGTERM (checkpoint, stop) on cancel or drain; a
        gang's rank is guarded by its lease."""
        proc = await asyncio.create_subprocess_exec(
            *dying_with_parent(argv, signal.SIGKILL), stdout=asyncio.subprocess.PIPE)
        stop_sent = False
        try:
            async with asyncio.TaskGroup() as tasks:
                watch = (tasks.create_task(guard(self._gangs, seat, self._id, proc))
                         if seat else None)
                while line := await self._next_line(proc, draining):
                    if line != b"\n":
                        await on_line(json.loads(line))
                    if (cancel_requested() or draining.is_set()) and not stop_sent:
                        proc.send_signal(signal.SIGTERM)  # stops at the next step, checkpointed
                        stop_sent = True
                code = await proc.wait()
                if watch is not None:
                    await cancel_and_wait(watch)
            return code
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise

    @staticmethod
    async def _next_line(proc: asyncio.subprocess.Process, draining: asyncio.Event) -> bytes:
        """The next stdout line; b"\\n" when draining starts (so the caller can react)."""
        assert proc.stdout is not None
        read = asyncio.ensure_future(proc.stdout.readline())
        drain = asyncio.ensure_future(draining.wait())
        done, _ = await asyncio.wait({read, drain}, return_when=asyncio.FIRST_COMPLETED)
        drain.cancel()
        if read in done:
            return read.result()
        read.cancel()
        return b"\n"

    async def _argv(self, job_id: str, envelope: JobEnvelope, extra: list[str]) -> list[str]:
        spec = envelope.train.spec
        # In a thread: an object store downloads the job's saved files (and the inputs).
        out = await asyncio.to_thread(self._artifacts.job_dir, job_id)
        out.mkdir(parents=True, exist_ok=True)
        # Atomic: the replicas of a gang write the same file in the same (shared) directory.
        write_atomic(out / "spec.json", from_proto(spec).to_json().encode())
        dataset = spec.dataset
        if dataset not in BUILTIN_DATASETS:
            record = await self._datasets.get(dataset)
            dataset = str(await asyncio.to_thread(self._artifacts.dataset_path, record.sha256,
                                                  record.format))
        argv = [sys.executable, "-m", "worker.training", "--spec", str(out / "spec.json"),
                "--dataset", dataset, "--out", str(out), "--threads", str(self._threads),
                "--group-timeout-s", str(GROUP_TIMEOUT_S), *extra]
        if spec.init_from:
            name, _, version = spec.init_from.partition(":")
            base = await self._registry.resolve(name, version)
            weights = await asyncio.to_thread(self._artifacts.weights_path, base.weights_sha256)
            argv += ["--init-weights", str(weights)]
        return argv

    async def _on_line(self, started: Started, run: _Run, doc: dict[str, Any]) -> None:
        kind = doc.get("type")
        job, events = run.job, []
        if kind == "progress":
            progress = TrainingProgress(
                epoch=doc["epoch"], step=doc["step"], global_step=doc["global_step"],
                total_steps=doc.get("total_steps", 0), loss=doc["loss"],
                samples_per_second=doc["samples_per_second"])
            job.progress.CopyFrom(progress)
            job.metrics["samples_per_second"] = progress.samples_per_second
            metrics.TRAINING_SAMPLES_PER_SECOND.set(progress.samples_per_second)
            events.append(_event(progress=progress))
        elif kind == "epoch":
            epoch = EpochMetrics(**{k: doc[k] for k in ("epoch", "train_loss", "val_loss",
                                                        "val_accuracy") if k in doc})
            epoch.samples_per_second = job.metrics.get("samples_per_second", 0.0)
            job.epochs.append(epoch)
            job.metrics.update(train_loss=epoch.train_loss, val_loss=epoch.val_loss,
                               val_accuracy=epoch.val_accuracy)
            events.append(_event(epoch=epoch))
        elif kind == "checkpoint":
            info = CheckpointInfo(global_step=doc["global_step"])
            info.time.GetCurrentTime()
            job.latest_checkpoint.CopyFrom(info)
            events.append(_event(checkpoint=info))
            # Only rank 0 reads lines (_ignored for the others), so one rank saves.
            await asyncio.to_thread(self._artifacts.save_job_dir, started.delivery.job_id)
        elif kind == "result":
            run.result = doc
        elif kind == "error":
            run.error = doc
        if events:
            cancel = await self._store.update(self._id, started.delivery, record=job,
                                              events=tuple(events))
            run.cancel_requested = run.cancel_requested or cancel

    async def _conclude(self, started: Started, run: _Run, code: int,
                        draining: asyncio.Event) -> None:
        if code == 0 and run.result.get("status") == "SUCCEEDED":
            version = await register_result(self._registry, self._queue, self._artifacts,
                                            run.job, run.result)
            run.job.model_version = f"{version.model}:{version.version}"
            run.job.progress.global_step = int(run.result["steps"])
            run.job.metrics.update({k: float(v) for k, v in run.result["metrics"].items()})
            return await self._finish(started, run, "SUCCEEDED", "",
                                      _event(model_version=run.job.model_version))
        if code == EXIT_STOPPED and run.cancel_requested:
            return await self._finish(started, run, "CANCELLED", "cancelled by request")
        if code == EXIT_STOPPED:  # a drain: this worker's, or (replicas) another rank's
            await self._queue.release(self._id, started.delivery, refund=True)
            metrics.TRAINING_FINISHED.labels("HANDED_BACK").inc()
            log.info("training job %s handed back (checkpointed) for the drain",
                     started.delivery.job_id)
            return None
        message = run.error.get("message") or f"the training process exited with {code}"
        if code == EXIT_INVALID or started.attempt >= started.envelope.max_attempts:
            return await self._finish(started, run, "FAILED", message)
        log.warning("training job %s attempt %d failed (%s); requeued",
                    started.delivery.job_id, started.attempt, message)
        await self._queue.release(self._id, started.delivery, refund=False)
        metrics.TRAINING_FINISHED.labels("REQUEUED").inc()
        return None

    async def _finish(self, started: Started, run: _Run, state: str, message: str,
                      *extra: TrainingEvent) -> None:
        run.job.state = TrainingJob.State.Value(state)
        run.job.error = message if state != "SUCCEEDED" else ""
        run.job.end_time.GetCurrentTime()
        metrics.TRAINING_FINISHED.labels(state).inc()
        await self._store.update(self._id, started.delivery, record=run.job, terminal=state,
                                 events=(*extra, state_event(run.job.state, message)))
