"""Placement by memory: whether a version's weights fit a worker's model memory
(MAAS_WORKER_MODEL_MEMORY_MB), and what the gateway refuses from the live workers' records."""

from __future__ import annotations

import pytest

from gateway.plane.placement import check_room
from maas.errors import ModelTooLarge
from maas.v1.model_service_pb2 import ModelFormat, ModelVersion
from runtime.queue.v1.queue_pb2 import WorkerHeartbeat
from scheduler.workers import cached_bytes, fits, fits_any

MIB = 1024 * 1024
BIG = ModelVersion(model="big", version="2", architecture="mlp", weights_bytes=5 * MIB)


def worker(budget_mb: int, *serves: str) -> WorkerHeartbeat:
    return WorkerHeartbeat(worker_id=f"w-{budget_mb}", serves=serves,
                           model_memory_budget_bytes=budget_mb * MIB)


@pytest.mark.parametrize(("budget", "size", "expected"), [
    (0, 10 * MIB, True),  # no budget: anything fits
    (MIB, MIB, True),
    (MIB, MIB + 1, False),
    (MIB, 0, True),  # size unknown: the worker's cache decides, by the file
])
def test_weights_fit_a_budget_or_no_budget(budget: int, size: int, expected: bool) -> None:
    assert fits(budget, size) is expected


def test_an_archive_is_not_counted_against_the_cache() -> None:
    archive = ModelVersion(model="m", format=ModelFormat.MODEL_FORMAT_TORCHSCRIPT,
                           archive_bytes=5 * MIB)
    assert cached_bytes(archive) == 0  # it runs in a runner (MAAS_RUNNER_MEMORY_MB)
    assert cached_bytes(BIG) == 5 * MIB


def test_only_a_worker_that_serves_the_model_counts() -> None:
    assert fits_any([worker(1), worker(0, "other")], "big", 5 * MIB) is False
    assert fits_any([worker(1), worker(0, "big")], "big", 5 * MIB) is True
    assert fits_any([worker(1), worker(8)], "big", 5 * MIB) is True
    assert fits_any([], "big", 5 * MIB) is False


def test_the_gateway_refuses_what_no_live_worker_fits() -> None:
    with pytest.raises(ModelTooLarge) as refused:
        check_room([worker(1), worker(2), worker(0, "cnn")], BIG)
    assert refused.value.reason == "MODEL_TOO_LARGE"
    message = refused.value.message
    assert "'big' version 2 needs 5.0 MiB" in message
    assert "2.0 MiB (MAAS_WORKER_MODEL_MEMORY_MB=2)" in message  # the largest that serves it


@pytest.mark.parametrize("live", [
    [worker(1), worker(0)],  # an unlimited worker
    [worker(1), worker(8)],  # a budget that fits
    [],  # nothing known (no live record): queued
    [worker(1, "cnn")],  # none serves it: NO_WORKER_FOR_MODEL's business, not this check's
])
def test_the_gateway_queues_what_a_live_worker_fits(live: list[WorkerHeartbeat]) -> None:
    check_room(live, BIG)


def test_a_version_of_unknown_size_is_left_to_the_worker() -> None:
    check_room([worker(1)], ModelVersion(model="big", version="1", architecture="mlp"))
