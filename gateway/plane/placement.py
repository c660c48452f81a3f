"""Placement by memory, at the gateway: a version whose weights fit no live worker that serves
its model is refused before its job is queued, where it could only fail on the worker.

Read from what the gateway already holds: the version's record (registry cache) and the live
workers' records (WorkerDirectory, cached ~1 s), so the check costs no round trip of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from maas.errors import ModelTooLarge
from maas.v1.model_service_pb2 import ModelVersion
from runtime.queue.v1.queue_pb2 import WorkerHeartbeat
from scheduler.keys import split_model_id
from scheduler.workers import cached_bytes, fits_any, serves

MIB = 1024 * 1024


def check_room(live: Sequence[WorkerHeartbeat], version: ModelVersion) -> None:
    """FAILED_PRECONDITION (MODEL_TOO_LARGE) when live workers serve the version's model but
    none has the model memory (MAAS_WORKER_MODEL_MEMORY_MB) for its weights. When nothing is
    known (no live record, an archive, no registered size) nothing is refused: the worker
    that takes the job decides (worker/handoff.py)."""
    size = cached_bytes(version)
    if not size:
        return
    serving = [w for w in live if serves(w.serves, version.model)]
    if not serving or fits_any(serving, version.model, size):
        return
    largest = max(w.model_memory_budget_bytes for w in serving)
    raise ModelTooLarge(
        f"model {split_model_id(version.model)[1]!r} version {version.version} needs "
        f"{size / MIB:.1f} MiB of model memory for its weights; the largest budget among the "
        f"{len(serving)} live worker(s) that serve it is {largest / MIB:.1f} MiB "
        f"(MAAS_WORKER_MODEL_MEMORY_MB={largest // MIB}): start a worker that serves the "
        "model with a larger MAAS_WORKER_MODEL_MEMORY_MB (0: no limit), or register a "
        "smaller version")
