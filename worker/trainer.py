"""Runs one leased training job in its own process and reports it through the queue.

The job runs as `python -m worker.training` so that a crash (or an OOM kill) cannot take
the worker down; the child dies with the worker (PDEATHSIG), and a job whose worker died is
re-leased by the reaper and resumes from its last checkpoint in the same job directory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from maas import metrics
from maas.artifacts import ArtifactStore
from maas.process import dying_with_parent
from maas.training_proto import from_proto
from maas.v1.training_service_pb2 import (
    CheckpointInfo,
    EpochMetrics,
    TrainingEvent,
    TrainingJob,
    TrainingProgress,
)
from scheduler.datasets import DatasetStore
from scheduler.queue import JobQueue, Started
from scheduler.registry import ModelRegistry
from scheduler.training import LeaseLost, TrainingStore, state_event
from worker.training_lineage import register_result

log = logging.getLogger(__name__)
EXIT_INVALID, EXIT_STOPPED = 2, 3


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
                 threads: int) -> None:
        self._id = worker_id
        self._queue = queue
        self._store = store
        self._registry = registry
        self._datasets = datasets
        self._artifacts = artifacts
        self._threads = threads

    async def run(self, started: Started, draining: asyncio.Event) -> None:
        """Runs the job to an end: SUCCEEDED, FAILED, CANCELLED, or handed back to the queue."""
        run = _Run(await self._store.get(started.delivery.job_id))
        run.job.state = TrainingJob.RUNNING
        if started.attempt == 1:
            run.job.start_time.GetCurrentTime()
        try:
            run.cancel_requested = await self._store.update(
                self._id, started.delivery, record=run.job,
                events=(state_event(TrainingJob.RUNNING, f"attempt {started.attempt}"),))
            if run.cancel_requested:
                return await self._finish(started, run, "CANCELLED", "cancelled")
            code = await self._run_child(started, run, draining)
            await self._conclude(started, run, code, draining)
        except LeaseLost:
            metrics.TRAINING_FINISHED.labels("LEASE_LOST").inc()
            log.warning("training job %s: lease lost; another worker resumes it",
                        started.delivery.job_id)
        finally:
            metrics.TRAINING_SAMPLES_PER_SECOND.set(0)

    async def _run_child(self, started: Started, run: _Run, draining: asyncio.Event) -> int:
        argv = await self._argv(started)
        proc = await asyncio.create_subprocess_exec(
            *dying_with_parent(argv, signal.SIGKILL), stdout=asyncio.subprocess.PIPE)
        stop_sent = False
        try:
            assert proc.stdout is not None
            while line := await self._next_line(proc, draining):
                if line != b"\n":
                    await self._on_line(started, run, json.loads(line))
                if (run.cancel_requested or draining.is_set()) and not stop_sent:
                    proc.send_signal(signal.SIGTERM)  # stops at the next step, checkpointed
                    stop_sent = True
            return await proc.wait()
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

    async def _argv(self, started: Started) -> list[str]:
        spec = started.envelope.train.spec
        out = self._artifacts.job_dir(started.delivery.job_id)
        out.mkdir(parents=True, exist_ok=True)
        (out / "spec.json").write_text(from_proto(spec).to_json())
        dataset = spec.dataset
        if dataset != "digits":
            record = await self._datasets.get(dataset)
            dataset = str(self._artifacts.dataset_path(record.sha256, record.format))
        argv = [sys.executable, "-m", "worker.training", "--spec", str(out / "spec.json"),
                "--dataset", dataset, "--out", str(out), "--threads", str(self._threads)]
        if spec.init_from:
            name, _, version = spec.init_from.partition(":")
            base = await self._registry.resolve(name, version)
            argv += ["--init-weights", str(self._artifacts.weights_path(base.weights_sha256))]
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
        if code == EXIT_STOPPED and draining.is_set():
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
