"""Nothing leaks to a caller without a key or to another tenant: health of `model/<name>`
needs a key and resolves the name in the caller's tenant; `/metrics` listens on loopback and
leaves tenant names out of labels unless told otherwise (a real gateway, scheduler pass and
redis-server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

import maas
from maas.api_keys import ensure_key_file
from maas.cli.up import free_port
from runtime import metrics
from runtime.settings import Settings
from scheduler.daemon import Daemon
from tests.inprocess import mlp_weights, running_gateway

pytestmark = pytest.mark.timeout(60)
Status = health_pb2.HealthCheckResponse


class Secured:
    def __init__(self, target: str, admin_key: str) -> None:
        self.target, self.admin_key = target, admin_key

    def key(self, tenant: str) -> str:
        with maas.Client(self.target, api_key=self.admin_key) as admin:
            return admin.create_key(tenant, ["infer", "train"]).api_key


@pytest.fixture
def secured(redis_url: str, tmp_path: Path) -> Iterator[Secured]:
    key_file = tmp_path / "admin.key"
    admin_key = ensure_key_file(key_file)
    with running_gateway(redis_url, tmp_path / "data", auth="on",
                         admin_key_file=str(key_file)) as port:
        yield Secured(f"127.0.0.1:{port}", admin_key)


def check(target: str, service: str, api_key: str | None = None) -> int:
    metadata = [("authorization", f"Bearer {api_key}")] if api_key else None
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5, metadata=metadata)
    return int(reply.status)


def first_watched(target: str, service: str, api_key: str | None = None) -> int:
    metadata = [("authorization", f"Bearer {api_key}")] if api_key else None
    with grpc.insecure_channel(target) as channel:
        replies = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=5, metadata=metadata)
        return int(next(iter(replies)).status)


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()  # type: ignore[no-any-return]


def test_model_health_needs_a_key_and_stays_in_the_tenant(secured: Secured) -> None:
    target = secured.target
    # Probes: the server and each service name need no key.
    assert check(target, "") == Status.SERVING
    assert check(target, "inference.GRPCInferenceService") == Status.SERVING
    assert first_watched(target, "") == Status.SERVING
    acme, globex = secured.key("acme"), secured.key("globex")
    with maas.Client(target, api_key=acme) as client:
        client.register_model("secret", "mlp", mlp_weights())
    for call in (lambda: check(target, "model/secret"),
                 lambda: first_watched(target, "model/secret"),
                 lambda: check(target, "model/secret", "maas_" + "0" * 16 + "_" + "0" * 64)):
        assert code_of(call) == grpc.StatusCode.UNAUTHENTICATED
    # The owner sees its model (no worker has it loaded); another tenant sees nothing.
    assert check(target, "model/secret", acme) == Status.NOT_SERVING
    assert first_watched(target, "model/secret", acme) == Status.NOT_SERVING
    assert code_of(lambda: check(target, "model/secret", globex)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: check(target, "model/nobody", globex)) == grpc.StatusCode.NOT_FOUND
    assert first_watched(target, "model/secret", globex) == Status.SERVICE_UNKNOWN


def test_a_model_watch_ends_once_its_key_is_revoked(secured: Secured) -> None:
    with maas.Client(secured.target, api_key=secured.admin_key) as admin:
        admin.register_model("mlp", "mlp", mlp_weights(), shared=True)
        made = admin.create_key("acme", ["infer"])
        with grpc.insecure_channel(secured.target) as channel:
            replies = iter(health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="model/mlp"), timeout=10,
                metadata=[("authorization", f"Bearer {made.api_key}")]))
            assert next(replies).status == Status.NOT_SERVING
            admin.revoke_key(made.key.key_id)
            revoked_at = time.monotonic()
            assert code_of(lambda: next(replies)) == grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - revoked_at < 2.5


def test_metrics_listen_on_loopback_by_default() -> None:
    server = metrics.start(Settings(metrics_port=free_port()))
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError, match="MAAS_METRICS_TENANT_LABELS"):
        Settings.from_env({"MAAS_METRICS_TENANT_LABELS": "yes"})
    assert Settings.from_env({"MAAS_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"


def queue_depth(model: str) -> float | None:
    return REGISTRY.get_sample_value("maas_queue_depth", {"model": model})


async def test_tenant_names_stay_out_of_metric_labels(secured: Secured, redis_url: str,
                                                      tmp_path: Path) -> None:
    """Two tenants' `digits` (one queued job each, no worker) and a shared `digits`."""
    x = {"input": np.zeros((1, 64), np.float32)}
    with maas.Client(secured.target, api_key=secured.admin_key) as admin:
        admin.register_model("digits", "mlp", mlp_weights(), shared=True)
    for tenant, jobs in (("acme", 1), ("globex", 2)):
        with maas.Client(secured.target, api_key=secured.key(tenant)) as client:
            client.register_model("digits", "mlp", mlp_weights())
            for _ in range(jobs):
                client.submit("digits", x)
    daemon = Daemon(Settings(redis_url=redis_url, data_dir=tmp_path / "data",
                             reaper_interval_ms=50))
    running = asyncio.create_task(daemon.run())
    try:
        await until(lambda: queue_depth("*/digits") == 3)  # both tenants' queues, added up
        assert queue_depth("digits") == 0  # the shared model's own
        assert queue_depth("acme/digits") is None and queue_depth("globex/digits") is None
        metrics.show_tenants(True)  # MAAS_METRICS_TENANT_LABELS=on
        await until(lambda: queue_depth("globex/digits") == 2)
        assert queue_depth("acme/digits") == 1
    finally:
        metrics.show_tenants(False)  # the default
        daemon.stop()
        await running


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
