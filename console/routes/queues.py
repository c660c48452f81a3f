"""Queues and workers. Queues: per model the caller's key sees (GetQueueStats: a tenant's own
and the shared models, every model for an admin), a table by priority — jobs waiting, leased,
the oldest one's age, jobs delivered — refreshed by server-sent events (`/queues/events`, one
read every REFRESH_S) from which the page's script takes the throughput (jobs/s over the last
minutes, kept in the browser); dead letters counted, and for an admin key listed with a
redrive button. Workers (admin): models served and loaded, memory, device, batches, last
heartbeat. A key without the admin scope sees the gateway's PERMISSION_DENIED said plainly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from console.pages import client_for, render
from console.routes.training import sse_frame
from console.security import read_form
from maas import AsyncClient
from maas.errors import DeadlineExceeded, MaasError, PermissionDenied
from maas.v1 import queue_service_pb2 as qpb

# The models whose dead letters one page lists (those with any, for an admin key).
MAX_MODELS = 100
# How often the event stream reads the queues (the issue: every 2-5 s, never under 1 s).
REFRESH_S = 3.0
# How long one event stream lasts before the browser reconnects.
STREAM_S = 600.0
LEVELS = {qpb.QUEUE_PRIORITY_HIGH: "high", qpb.QUEUE_PRIORITY_NORMAL: "normal",
          qpb.QUEUE_PRIORITY_LOW: "low"}


@dataclass
class ModelQueue:
    stats: qpb.ModelQueueStats
    dead_letters: list[qpb.DeadLetter] = field(default_factory=list)
    # Live workers that have a version of this model loaded (admin keys only).
    loaded: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.stats.model


def stats_data(stats: qpb.ModelQueueStats) -> dict[str, Any]:
    """One model's numbers as the page's script reads them."""
    return {"model": stats.model, "read_ms": stats.read_time.ToMilliseconds(),
            "dead_letters": stats.dead_letters, "delayed": stats.delayed,
            "serving_workers": stats.serving_workers,
            "levels": [{"level": LEVELS.get(p.priority, "?"), "waiting": p.waiting,
                        "leased": p.leased, "oldest_age_s": p.oldest_age_seconds,
                        "delivered_total": p.delivered_total,
                        "tenant_backlog": p.tenant_backlog} for p in stats.priorities]}


async def _admin_details(client: AsyncClient, queues: list[ModelQueue]) -> bool:
    """Dead letters (of the models that have any) and loaded workers, for an admin key;
    False when the key is not one (the gateway's PERMISSION_DENIED)."""
    try:
        workers = await client.workers()
    except PermissionDenied:
        return False
    for q in queues:
        q.loaded = [w.worker_id for w in workers
                    if any(v.partition(":")[0] == q.name for v in w.loaded)]
    for q in [q for q in queues if q.stats.dead_letters][:MAX_MODELS]:
        q.dead_letters = await client.dead_letters(q.name)
    return True


async def queues_page(request: Request) -> Response:
    client = await client_for(request)
    queues = [ModelQueue(s) for s in await client.queue_stats()]
    is_admin = await _admin_details(client, queues)
    return render(request, "queues.html", {"queues": queues, "is_admin": is_admin,
                                           "levels": LEVELS, "refresh_s": REFRESH_S})


async def events(request: Request) -> Response:
    """Every REFRESH_S, a `stats` event with every model's numbers; a failure is an `error`
    event that ends the stream (the browser does not retry a refusal)."""
    client = await client_for(request)
    first = await client.queue_stats()  # refused before the stream starts: 401/403 page

    async def stream() -> AsyncIterator[str]:
        yield f"retry: {int(REFRESH_S * 1000)}\n\n"
        found, loop = first, asyncio.get_running_loop()
        ends = loop.time() + STREAM_S
        while True:
            yield sse_frame("stats", {"models": [stats_data(s) for s in found]})
            if loop.time() + REFRESH_S > ends:
                return  # the browser reconnects
            await asyncio.sleep(REFRESH_S)
            try:
                found = await client.queue_stats()
            except DeadlineExceeded:
                continue  # a slow read: the next one may answer
            except MaasError as err:
                yield sse_frame("error", {"code": err.code.name, "message": err.message})
                return

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def redrive(request: Request) -> Response:
    model = request.path_params["model"]
    form = await read_form(request)
    job_ids = [form["job_id"]] if form.get("job_id") else []
    redriven = await (await client_for(request)).redrive(model, job_ids)
    return render(request, "redriven.html", {"model": model, "job_ids": redriven})


async def workers_page(request: Request) -> Response:
    denied = ""
    workers: list[qpb.Worker] = []
    try:
        workers = await (await client_for(request)).workers()
    except PermissionDenied as err:
        denied = err.message
    return render(request, "workers.html", {"workers": workers, "denied": denied})


ROUTES = [
    Route("/queues", queues_page),
    Route("/queues/events", events),
    Route("/queues/{model:path}/redrive", redrive, methods=["POST"]),
    Route("/workers", workers_page),
]
