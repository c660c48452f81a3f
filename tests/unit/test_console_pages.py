"""The web console without a cluster: every value rendered escaped, the CSRF double submit
on every unsafe method, safe redirects after login, .npy inputs read without pickle, and
training events as server-sent events."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from console.pages import NAV, templates
from console.routes.auth import _next_path
from console.routes.models import version_size
from console.routes.queues import LEVELS, REFRESH_S, ModelQueue
from console.routes.training import event_data, sse_frame
from console.security import CSRF_COOKIE, CsrfMiddleware
from console.settings import port_from
from console.trying import InputSpec, input_spec, read_npy
from maas.cli.main import build_parser
from maas.cli.up import LocalCluster, start_console
from maas.errors import InvalidArgument
from maas.v1 import model_service_pb2 as mpb
from maas.v1 import queue_service_pb2 as qpb
from maas.v1 import training_service_pb2 as tpb

MARKUP = "<script>alert('x')</script>"


def page(name: str, **context: Any) -> str:
    base = {"nav": NAV, "path": "/", "csrf_token": "t" * 43, "is_auth": True,
            "is_logged_in": True}
    return str(templates().env.get_template(name).render({**base, **context}))


def test_every_value_is_escaped() -> None:
    version = mpb.ModelVersion(
        model=MARKUP, version="1", architecture=MARKUP, training_job_id=MARKUP,
        dataset_sha256=MARKUP, training_spec_json=json.dumps({"note": MARKUP}),
        metrics={MARKUP: 1.0}, state_reason=MARKUP, state=mpb.MODEL_VERSION_STATE_REJECTED)
    model = mpb.Model(name=MARKUP, versions=[version], latest_version="1",
                      aliases={MARKUP: "1"})
    worker = qpb.Worker(worker_id=MARKUP, hostname=MARKUP, device=MARKUP, serves=[MARKUP],
                        loaded=[MARKUP])
    stats = qpb.ModelQueueStats(model=MARKUP, dead_letters=1, worker_ids=[MARKUP],
                                priorities=[qpb.PriorityQueueStats(priority=p)
                                            for p in LEVELS])
    job = tpb.TrainingJob(job_id=MARKUP, error=MARKUP, request_id=MARKUP,
                          status_message=MARKUP, model_version=f"{MARKUP}:1",
                          spec=tpb.TrainingSpec(model_name=MARKUP, dataset=MARKUP))
    rendered = [
        page("models.html", models=[model]),
        page("model.html", model=model, versions=[version], aliases={"1": [MARKUP]},
             version_size=version_size),
        page("workers.html", workers=[worker], denied=""),
        page("training.html", jobs=[job]),
        page("training_job.html", job=job, is_active=True, resumes=0),
        page("queues.html", queues=[ModelQueue(stats, [qpb.DeadLetter(
            job_id=MARKUP, reason=MARKUP, redrivable=True)], [MARKUP])], is_admin=True,
             levels=LEVELS, refresh_s=REFRESH_S),
        page("login.html", next=MARKUP, message=MARKUP),
    ]
    for html in rendered:
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(" in html


def csrf_app() -> httpx.AsyncClient:
    """A route behind the console's middleware, called in process (no socket)."""
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"ok {len(await request.body())}")

    app = Starlette(routes=[Route("/act", ok, methods=["GET", "POST"])],
                    middleware=[Middleware(CsrfMiddleware)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")


async def test_every_post_needs_the_token_of_the_cookie() -> None:
    async with csrf_app() as client:
        first = await client.get("/act")
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert "script-src 'self'" in first.headers["content-security-policy"]
        token = client.cookies[CSRF_COOKIE]
        assert (await client.post("/act", data={"x": "1"})).status_code == 403
        assert (await client.post("/act", data={"csrf_token": "forged"})).status_code == 403
        header = await client.post("/act", content=b"1", headers={"x-csrf-token": "f"})
        assert header.status_code == 403
        done = await client.post("/act", data={"csrf_token": token})
        assert done.status_code == 200 and done.text.startswith("ok ")
        body = await client.post("/act", content=b"abc", headers={"x-csrf-token": token})
        assert body.text == "ok 3"


async def test_a_post_from_a_browser_without_the_cookie_is_refused() -> None:
    async with csrf_app() as client:  # a forged form from another site: no cookie
        forged = await client.post("/act", data={"csrf_token": "a" * 43})
        assert forged.status_code == 403
        assert forged.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("raw, expected", [
    ("/training/abc", "/training/abc"), ("//evil.example", "/models"),
    ("https://evil.example", "/models"), ("/\\evil.example", "/models"), (None, "/models"),
])
def test_login_goes_back_only_to_the_console(raw: str | None, expected: str) -> None:
    assert _next_path(raw) == expected


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=allow_pickle)
    return out.getvalue()


def test_an_image_input_is_drawn_and_read_without_pickle() -> None:
    version = mpb.ModelVersion(inputs=[mpb.TensorSpec(name="input", datatype="FP32",
                                                      shape=[-1, 1, 28, 28])])
    spec = input_spec(version)
    assert spec == InputSpec("input", "FP32", [-1, 1, 28, 28], 28, 28)
    drawn = read_npy(npy(np.ones((28, 28), np.float64)), spec)
    assert drawn.shape == (1, 1, 28, 28) and drawn.dtype == np.float32
    with pytest.raises(InvalidArgument):
        read_npy(npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), spec)
    with pytest.raises(InvalidArgument):
        read_npy(b"not npy", spec)
    flat = input_spec(mpb.ModelVersion(inputs=[mpb.TensorSpec(name="x", datatype="FP32",
                                                              shape=[-1, 64])]))
    assert flat is not None and flat.height == 0
    assert read_npy(npy(np.zeros(64, np.float32)), flat).shape == (1, 64)


def test_training_events_are_one_line_server_sent_events() -> None:
    event = tpb.TrainingEvent(sequence=7, progress=tpb.TrainingProgress(
        epoch=1, global_step=20, total_steps=40, loss=0.5))
    frame = sse_frame("training", event_data(event), event.sequence)
    assert frame.startswith("id: 7\nevent: training\ndata: {") and frame.endswith("}\n\n")
    assert json.loads(frame.split("data: ", 1)[1]) | {"kind": "progress"} == {
        "sequence": 7, "kind": "progress", "time_s": 0.0, "epoch": 1, "global_step": 20,
        "total_steps": 40, "loss": 0.5, "samples_per_second": 0.0}
    state = event_data(tpb.TrainingEvent(sequence=8, state=tpb.TrainingJob.FAILED,
                                         message="x\ny"))
    assert state["state"] == "FAILED" and "\n" not in sse_frame("training", state)[-40:-2]


def test_the_console_port_comes_from_the_flag_else_the_environment() -> None:
    assert port_from(None, {}) == 8265
    assert port_from(None, {"MAAS_CONSOLE_PORT": "9000"}) == 9000
    assert port_from(0, {"MAAS_CONSOLE_PORT": "9000"}) == 0
    with pytest.raises(SystemExit, match="not a port"):
        port_from(None, {"MAAS_CONSOLE_PORT": "eighty"})
    up = build_parser().parse_args(["up", "--console-port", "0", "--no-console"])
    assert up.console_port == 0 and up.no_console
    assert start_console(LocalCluster({}, Path(".")), up) is None  # nothing started
    standalone = build_parser().parse_args(["console", "--target", "h:1", "--auth", "on"])
    assert (standalone.target, standalone.auth, standalone.port) == ("h:1", "on", None)
