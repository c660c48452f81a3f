"""QueueService.GetQueueStats against a real gateway (auth on) and redis-server, no workers:
an admin key sees every model, a tenant's key its own and the shared ones (another tenant's
model is NOT_FOUND, by name or by id), no key is UNAUTHENTICATED; the SDK (both clients) and
`maas queues stats` read the same numbers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

import maas
from maas.api_keys import ensure_key_file
from maas.cli.main import main
from maas.v1 import queue_service_pb2 as qpb
from maas.v1.queue_service_pb2_grpc import QueueServiceStub
from tests.inprocess import mlp_weights, running_gateway

pytestmark = pytest.mark.timeout(60)

X = {"input": np.zeros((1, 64), np.float32)}
HIGH, NORMAL, LOW = 1, 0, 3  # v2 priorities of the three levels


class Keys:
    def __init__(self, target: str, admin: str) -> None:
        self.target, self.admin = target, admin
        with self.client(admin) as client:
            self.acme = client.create_key("acme", ["infer", "train"]).api_key
            self.globex = client.create_key("globex", ["infer", "train"]).api_key
            self.acme_infer = client.create_key("acme", ["infer"]).api_key

    def client(self, key: str | None) -> maas.Client:
        return maas.Client(self.target, api_key=key, timeout_s=10)


@pytest.fixture
def keys(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Keys]:
    monkeypatch.delenv("MAAS_API_KEY", raising=False)
    key_file = tmp_path / "admin.key"
    admin = ensure_key_file(key_file)
    with running_gateway(redis_url, tmp_path / "data", auth="on",
                         admin_key_file=str(key_file)) as port:
        found = Keys(f"127.0.0.1:{port}", admin)
        with found.client(admin) as client:
            client.register_model("public", "mlp", mlp_weights(), shared=True)
        for key, name in ((found.acme, "m"), (found.globex, "secret")):
            with found.client(key) as client:
                client.register_model(name, "mlp", mlp_weights())
        yield found


def counts(stats: qpb.ModelQueueStats) -> list[tuple[int, int, int]]:
    return [(p.priority, p.waiting, p.leased) for p in stats.priorities]


def test_a_tenant_sees_its_own_and_shared_models_only(keys: Keys) -> None:
    with keys.client(keys.acme) as acme:
        for priority in (HIGH, HIGH, LOW):
            acme.submit("m", X, priority=priority)  # queued: no worker here
        acme.submit("public", X)
        found = {s.model: s for s in acme.queue_stats()}
        assert set(found) == {"m", "public"}
        assert counts(found["m"]) == [(qpb.QUEUE_PRIORITY_HIGH, 2, 0),
                                      (qpb.QUEUE_PRIORITY_NORMAL, 0, 0),
                                      (qpb.QUEUE_PRIORITY_LOW, 1, 0)]
        assert found["m"].priorities[0].oldest_age_seconds > 0
        assert found["public"].shared and not found["m"].shared
        assert found["m"].worker_ids == [] and found["m"].read_time.seconds > 0
        [one] = acme.queue_stats("m")
        assert one.model == "m" and counts(one) == counts(found["m"])
        answers = set()
        for hidden in ("secret", "globex/secret", "acme/m", "nothing"):
            with pytest.raises(maas.ModelNotFound) as caught:
                acme.queue_stats(hidden)
            answers.add(caught.value.message.replace(hidden, "NAME"))
        assert len(answers) == 1, answers  # another tenant's model reads as no model at all
        with pytest.raises(maas.PermissionDenied):
            acme.dead_letters("m")  # dead letters stay an operator's
    with keys.client(keys.acme_infer) as infer_only:
        assert {s.model for s in infer_only.queue_stats()} == {"m", "public"}
    with keys.client(keys.globex) as globex:
        mine = {s.model: s for s in globex.queue_stats()}
        assert set(mine) == {"secret", "public"}
        assert sum(p.waiting for p in mine["public"].priorities) == 1  # the shared queue
        with pytest.raises(maas.ModelNotFound):
            globex.queue_stats("m")


def test_an_admin_sees_every_model_by_id(keys: Keys) -> None:
    with keys.client(keys.acme) as acme:
        acme.submit("m", X, priority=NORMAL)
    with keys.client(keys.admin) as admin:
        found = {s.model: s for s in admin.queue_stats()}
        assert set(found) == {"acme/m", "globex/secret", "public"}
        assert counts(found["acme/m"])[1] == (qpb.QUEUE_PRIORITY_NORMAL, 1, 0)
        assert admin.queue_stats("acme/m")[0].model == "acme/m"
        with pytest.raises(maas.ModelNotFound):
            admin.queue_stats("m")  # an admin names a tenant's model by its id


def test_no_key_is_unauthenticated(keys: Keys) -> None:
    for key in (None, "not-a-key"):
        with keys.client(key) as anonymous, pytest.raises(maas.Unauthenticated) as caught:
            anonymous.queue_stats()
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_pages_and_bad_tokens(keys: Keys) -> None:
    with grpc.insecure_channel(keys.target) as channel:
        stub = QueueServiceStub(channel)
        auth = (("authorization", f"Bearer {keys.admin}"),)
        first = stub.GetQueueStats(qpb.GetQueueStatsRequest(page_size=2), metadata=auth)
        assert [m.model for m in first.models] == ["acme/m", "globex/secret"]
        assert first.next_page_token == "globex/secret"
        rest = stub.GetQueueStats(qpb.GetQueueStatsRequest(
            page_size=2, page_token=first.next_page_token), metadata=auth)
        assert [m.model for m in rest.models] == ["public"] and not rest.next_page_token
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetQueueStats(qpb.GetQueueStatsRequest(page_token="<b>"), metadata=auth)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_async_client_and_cli(keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    async def read() -> list[qpb.ModelQueueStats]:
        async with maas.AsyncClient(keys.target, api_key=keys.acme) as client:
            return await client.queue_stats("m")

    assert [s.model for s in asyncio.run(read())] == ["m"]
    flags = ["--target", keys.target, "--api-key", keys.acme]
    assert main(["queues", "stats", "--model", "m", "--json", *flags]) == 0
    [doc] = json.loads(capsys.readouterr().out)["models"]
    assert doc["model"] == "m" and [p["priority"] for p in doc["priorities"]] == [
        "QUEUE_PRIORITY_HIGH", "QUEUE_PRIORITY_NORMAL", "QUEUE_PRIORITY_LOW"]
    assert main(["queues", "stats", "--rate-over", "0.2", *flags]) == 0
    text = capsys.readouterr().out
    assert "public (shared)" in text and "rate 0.00 jobs/s" in text and "secret" not in text
