"""The web console against a real cluster (auth off): every page renders from the public
API, a trained version's lineage shows, a running job's events stream as server-sent events,
try-a-model answers the seed CNN's outputs and an Integrated-Gradients heat map, and values
from the API that contain markup are shown as text."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

import maas
from maas.v1 import training_service_pb2 as tpb
from runtime.datasets import builtin_dataset, present
from tests.conftest import Cluster
from tests.console_server import csrf_token, running_console

pytestmark = pytest.mark.timeout(120)

MARKUP = "<script>alert(1)</script>"
# Tiny training: the seed CNN on digits, a few dozen steps.
TINY = {"architecture": "cnn", "dataset": "digits", "batch_size": 32, "epochs": 2,
        "max_steps": 60, "seed": 0}


@pytest.fixture(scope="module")
def console(cluster: Cluster) -> Iterator[httpx.Client]:
    with running_console(cluster.target) as base, httpx.Client(base_url=base,
                                                               timeout=60) as client:
        yield client


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) of a text/event-stream."""
    name = ""
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


@pytest.mark.parametrize("path, text", [
    ("/models", "cnn"), ("/models/cnn", "sha256"), ("/training", "Training jobs"),
    ("/queues", "worker-1"), ("/workers", "worker-1"), ("/try", "Draw a digit"),
])
def test_pages_render(console: httpx.Client, path: str, text: str) -> None:
    page = console.get(path)
    assert page.status_code == 200, page.text
    assert text in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_running_job_streams_progress_and_lineage_shows(console: httpx.Client,
                                                        cluster: Cluster) -> None:
    with maas.Client(cluster.target) as sdk:
        handle = sdk.train({"model_name": "console-lineage", **TINY})
        seen: list[str] = []
        running_at_first_progress = None
        with console.stream("GET", f"/training/{handle.id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for name, data in sse_events(stream.iter_lines()):
                seen.append(data.get("kind", name))
                if data.get("kind") == "progress" and running_at_first_progress is None:
                    running_at_first_progress = handle.refresh().state == tpb.TrainingJob.RUNNING
                    assert data["global_step"] > 0 and data["loss"] > 0
        job = handle.refresh()
    assert running_at_first_progress, seen  # progress came while the job ran
    assert seen[-1] == "end" and "epoch" in seen and "model_version" in seen
    page = console.get("/models/console-lineage")
    assert page.status_code == 200
    for fact in (job.job_id, job.dataset_sha256, "val_accuracy", "Lineage of version"):
        assert fact in page.text
    job_page = console.get(f"/training/{job.job_id}")
    assert "SUCCEEDED" in job_page.text and "console-lineage:1" in job_page.text


def test_try_a_model_predicts_and_explains(console: httpx.Client) -> None:
    digit = present(builtin_dataset("digits"), (-1, 1, 28, 28)).features[0, 0]  # a 28x28 "0"
    headers = {"x-csrf-token": csrf_token(console)}
    answer = console.post("/try/cnn/infer", content=npy(digit), headers=headers)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert 0 <= doc["predicted"] <= 9 and abs(sum(doc["probabilities"]) - 1) < 1e-6
    assert doc["outputs"][0]["shape"] == [1, 10]
    explained = console.post("/try/cnn/explain", content=npy(digit), headers=headers)
    assert explained.status_code == 200, explained.text
    heat = explained.json()
    assert heat["method"] == "integrated_gradients" and heat["target"] == doc["predicted"]
    assert np.array(heat["attributions"]).shape == (28, 28)
    assert np.array(heat["input"]).shape == (28, 28)


def test_actions_need_the_csrf_token(console: httpx.Client) -> None:
    refused = console.post("/try/cnn/infer", content=npy(np.zeros((28, 28), np.float32)))
    assert refused.status_code == 403
    forged = console.post("/try/cnn/infer", content=b"x", headers={"x-csrf-token": "forged"})
    assert forged.status_code == 403


def test_a_pickle_is_not_an_input(console: httpx.Client) -> None:
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    answer = console.post("/try/cnn/infer", content=pickled.getvalue(),
                          headers={"x-csrf-token": csrf_token(console)})
    assert answer.status_code == 400 and answer.json()["code"] == "INVALID_ARGUMENT"


def test_markup_from_the_api_is_shown_as_text(console: httpx.Client,
                                               cluster: Cluster) -> None:
    with maas.Client(cluster.target) as sdk:  # a request id is free text
        job = sdk.train({"model_name": "console-markup", **TINY, "max_steps": 5},
                        request_id=MARKUP)
        page = console.get(f"/training/{job.id}")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and MARKUP not in page.text
        job.wait(timeout_s=60)  # ended before the module's cluster stops
    # An unknown model's name comes back in the gateway's NOT_FOUND message.
    missing = console.get("/models/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert missing.status_code == 404 and "NOT_FOUND" in missing.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in missing.text
    assert "<img" not in missing.text


def test_queues_show_each_priority_and_stream_the_deliveries(console: httpx.Client,
                                                             cluster: Cluster) -> None:
    x = {"input": np.zeros((1, 1, 28, 28), np.float32)}
    with maas.Client(cluster.target) as sdk:
        [before] = sdk.queue_stats("cnn")
        for _ in range(3):
            sdk.infer("cnn", x, priority=1)  # the high stream
        [after] = sdk.queue_stats("cnn")
    high = after.priorities[0]
    assert high.delivered_total - before.priorities[0].delivered_total == 3
    page = console.get("/queues").text
    assert '<tr data-level="high">' in page and "Jobs/s" in page and "PERMISSION_DENIED" not in page
    assert f'<td data-field="delivered_total">{high.delivered_total}</td>' in page
    with console.stream("GET", "/queues/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name, data = next(sse_events(stream.iter_lines()))
    assert name == "stats"
    cnn = next(m for m in data["models"] if m["model"] == "cnn")
    assert [lv["level"] for lv in cnn["levels"]] == ["high", "normal", "low"]
    assert cnn["levels"][0]["delivered_total"] == high.delivered_total
    assert cnn["serving_workers"] >= 1 and cnn["read_ms"] > 0
