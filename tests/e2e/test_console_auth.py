"""The web console with auth on (a real cluster with MAAS_AUTH=on): a login page without a
key, the key kept in an HttpOnly, SameSite=Strict cookie, each tenant seeing only its own
things, admin views refused for a tenant's key, and actions refused without the CSRF
token but done with it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from safetensors.torch import save

import maas
from maas.v1 import training_service_pb2 as tpb
from runtime.architectures import get_architecture
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.console_server import csrf_token, running_console

pytestmark = pytest.mark.timeout(120)

Job = tpb.TrainingJob
# Long enough to be cancelled while queued or running.
LONG = {"architecture": "cnn", "dataset": "digits", "batch_size": 8, "epochs": 50, "seed": 0}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("console-auth"), workers=1, auth="on")
    yield running
    stop_cluster(running)


@pytest.fixture(scope="module")
def base(secured: Cluster) -> Iterator[str]:
    with running_console(secured.target, auth="on") as url:
        yield url


@pytest.fixture(scope="module")
def keys(secured: Cluster) -> dict[str, str]:
    """API keys of tenants acme and globex (infer, train), and the admin's."""
    with maas.Client(secured.target, api_key=secured.admin_key) as admin:
        made = {t: admin.create_key(t, ["infer", "train"]).api_key for t in ("acme", "globex")}
    return {**made, "admin": secured.admin_key}


@contextmanager
def logged_in(base: str, key: str) -> Iterator[httpx.Client]:
    """A browser logged in with `key`."""
    with httpx.Client(base_url=base, timeout=60) as client:
        answer = client.post("/login", data={"api_key": key, "next": "/models",
                                             "csrf_token": csrf_token(client)})
        assert answer.status_code == 303, answer.text
        yield client


def test_without_a_key_the_login_page(base: str) -> None:
    with httpx.Client(base_url=base, timeout=60, follow_redirects=True) as client:
        page = client.get("/models", headers={"accept": "text/html"})
        assert page.status_code == 200 and "API key" in page.text
        assert page.url.path == "/login"
        refused = client.post("/login", data={"api_key": "wrong",
                                              "csrf_token": csrf_token(client)})
        assert refused.status_code == 401 and "refused this API key" in refused.text


def test_the_key_cookie_is_httponly_and_strict(base: str, keys: dict[str, str]) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        answer = client.post("/login", data={"api_key": keys["acme"],
                                             "csrf_token": csrf_token(client)})
        assert answer.status_code == 303
        cookie = next(c for c in answer.headers.get_list("set-cookie")
                      if c.startswith("maas_api_key="))
        attributes = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= attributes


def test_a_tenant_sees_only_its_own(base: str, secured: Cluster,
                                    keys: dict[str, str]) -> None:
    arch = get_architecture("mlp")
    weights = save(arch.build(arch.resolve_config(None)).state_dict())
    with maas.Client(secured.target, api_key=keys["globex"]) as globex:
        globex.register_model("globex-secret", "mlp", weights)
    with logged_in(base, keys["acme"]) as acme, logged_in(base, keys["globex"]) as other:
        assert "globex-secret" in other.get("/models").text
        models = acme.get("/models").text
        assert "cnn" in models and "globex-secret" not in models
        assert acme.get("/models/globex-secret").status_code == 404
        queues = acme.get("/queues").text  # GetQueueStats: a tenant's own and shared models
        assert "cnn" in queues and "globex-secret" not in queues and "Redrive" not in queues
        assert "globex-secret" in other.get("/queues").text
        with acme.stream("GET", "/queues/events") as events:
            first = next(line for line in events.iter_lines() if line.startswith("data: "))
        assert '"cnn"' in first and "globex" not in first
    with logged_in(base, keys["admin"]) as admin:
        assert "globex/globex-secret" in admin.get("/queues").text  # an admin: every model


def test_admin_views_need_the_admin_scope(base: str, keys: dict[str, str]) -> None:
    with logged_in(base, keys["acme"]) as acme:
        page = acme.get("/workers")
        assert page.status_code == 200 and "PERMISSION_DENIED" in page.text
        redrive = acme.post("/queues/cnn/redrive", data={"csrf_token": csrf_token(acme)})
        assert redrive.status_code == 403 and "PERMISSION_DENIED" in redrive.text
    with logged_in(base, keys["admin"]) as admin:
        assert "worker-1" in admin.get("/workers").text


def test_cancel_needs_the_csrf_token(base: str, secured: Cluster,
                                     keys: dict[str, str]) -> None:
    with maas.Client(secured.target, api_key=keys["acme"]) as sdk:
        handle = sdk.train({"model_name": "console-cancel", **LONG})
        with logged_in(base, keys["acme"]) as acme, logged_in(base, keys["globex"]) as other:
            url = f"/training/{handle.id}/cancel"
            assert acme.post(url).status_code == 403
            assert acme.post(url, data={"csrf_token": "forged"}).status_code == 403
            assert handle.refresh().state in (Job.QUEUED, Job.RUNNING)
            assert other.get(f"/training/{handle.id}").status_code == 404  # not globex's
            done = acme.post(url, data={"csrf_token": csrf_token(acme)})
            assert done.status_code == 303
            assert handle.refresh().state in (Job.CANCELLING, Job.CANCELLED)
            assert "CANCEL" in acme.get(f"/training/{handle.id}").text
        handle.wait(timeout_s=60)
