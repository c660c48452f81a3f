"""Training: the jobs (state, attempts, resumes); one job with its live loss and accuracy
curves, its checkpoints and a cancel button. The curves are fed by server-sent events, each
one event of WatchTrainingJob (`/training/{id}/events`), resumable with Last-Event-ID."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from console.pages import client_for, render
from maas.errors import DeadlineExceeded, MaasError
from maas.training_client import TERMINAL
from maas.v1 import training_service_pb2 as tpb

# How long one event stream follows a job before the browser reconnects (Last-Event-ID).
STREAM_S = 3600.0


def event_data(event: tpb.TrainingEvent) -> dict[str, Any]:
    """One event as the page's script reads it: its kind and that kind's numbers."""
    kind = event.WhichOneof("event") or "unknown"
    data: dict[str, Any] = {"sequence": event.sequence, "kind": kind,
                            "time_s": event.time.ToNanoseconds() / 1e9}
    if kind == "progress":
        p = event.progress
        data.update(epoch=p.epoch, global_step=p.global_step, total_steps=p.total_steps,
                    loss=p.loss, samples_per_second=p.samples_per_second)
    elif kind == "epoch":
        e = event.epoch
        data.update(epoch=e.epoch, train_loss=e.train_loss, val_loss=e.val_loss,
                    val_accuracy=e.val_accuracy, samples_per_second=e.samples_per_second)
    elif kind == "checkpoint":
        data.update(global_step=event.checkpoint.global_step,
                    checkpoint_time_s=event.checkpoint.time.ToNanoseconds() / 1e9)
    elif kind == "state":
        data.update(state=tpb.TrainingJob.State.Name(event.state), message=event.message)
    elif kind == "model_version":
        data.update(model_version=event.model_version)
    return data


def sse_frame(name: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One server-sent event; JSON has no raw newline, so `data` is one line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data)}\n\n"


async def list_page(request: Request) -> Response:
    jobs = await (await client_for(request)).list_training_jobs(page_size=100)
    return render(request, "training.html", {"jobs": jobs})


async def job_page(request: Request) -> Response:
    handle = await (await client_for(request)).training_job(request.path_params["job_id"])
    job = handle.job
    return render(request, "training_job.html", {
        "job": job, "is_active": job.state not in TERMINAL,
        "resumes": max(0, job.attempts - 1)})


async def events(request: Request) -> Response:
    """The job's events as text/event-stream, from the first (or after Last-Event-ID), ending
    with an `end` event after the terminal state; a failure mid-stream is an `error` event."""
    client = await client_for(request)
    handle = await client.training_job(request.path_params["job_id"])  # 404 before streaming
    raw_after = request.headers.get("last-event-id") or request.query_params.get("after", "0")
    after = int(raw_after) if raw_after.isdigit() else 0

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        try:
            async for event in handle.watch(after_sequence=after, timeout_s=STREAM_S):
                yield sse_frame("training", event_data(event), event.sequence)
        except DeadlineExceeded:
            return  # the stream's time is up: the browser reconnects with Last-Event-ID
        except MaasError as err:
            yield sse_frame("error", {"code": err.code.name, "message": err.message})
            return
        yield sse_frame("end", {})

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def cancel(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    handle = await (await client_for(request)).training_job(job_id)
    await handle.cancel()
    return RedirectResponse(f"/training/{job_id}", status_code=303)


ROUTES = [
    Route("/training", list_page),
    Route("/training/{job_id}", job_page),
    Route("/training/{job_id}/events", events),
    Route("/training/{job_id}/cancel", cancel, methods=["POST"]),
]
