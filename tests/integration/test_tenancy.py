"""API keys, scopes, tenants and limits against a real gateway and redis-server (no workers)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import maas
from maas.api_keys import ensure_key_file
from maas.client import infer_request
from maas.v1 import training_service_pb2 as tpb
from tests.inprocess import mlp_weights, running_gateway

pytestmark = pytest.mark.timeout(60)

DIGITS_SPEC = {"architecture": "cnn", "dataset": "digits", "epochs": 1, "max_steps": 1}


@dataclass
class Gateway:
    target: str
    admin_key: str

    def client(self, api_key: str | None = "") -> maas.Client:
        """A client with this key ("" = the admin key, None = no key at all)."""
        key = self.admin_key if api_key == "" else api_key
        return maas.Client(self.target, api_key=key or None, timeout_s=10)

    def key(self, tenant: str, scopes: str = "infer,train") -> str:
        with self.client() as admin:
            return admin.create_key(tenant, scopes.split(",")).api_key


@pytest.fixture
def gateway(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    monkeypatch.delenv("MAAS_API_KEY", raising=False)
    key_file = tmp_path / "admin.key"
    admin_key = ensure_key_file(key_file)
    with running_gateway(redis_url, tmp_path / "data", auth="on",
                         admin_key_file=str(key_file)) as port:
        yield Gateway(f"127.0.0.1:{port}", admin_key)


def test_health_needs_no_key(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("api_key", [None, "not-a-key", "maas_" + "0" * 16 + "_" + "0" * 64])
def test_no_valid_key_is_unauthenticated(gateway: Gateway, api_key: str | None) -> None:
    with gateway.client(api_key) as client:
        for call in (client.list_models, client.is_ready, client.list_datasets):
            with pytest.raises(maas.Unauthenticated) as caught:
                call()
            assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_each_scope_opens_its_methods_only(gateway: Gateway) -> None:
    infer_only = gateway.key("acme", "infer")
    with gateway.client(infer_only) as client:
        assert client.is_ready()
        assert client.list_models() == []
        for denied in (client.list_datasets, client.list_training_jobs,
                       lambda: client.train({**DIGITS_SPEC, "model_name": "x"}),
                       lambda: client.register_model("m", "mlp", mlp_weights()),
                       client.list_keys):
            with pytest.raises(maas.PermissionDenied) as caught:
                denied()
            assert "scope" in caught.value.message
    with gateway.client(gateway.key("acme", "train")) as client:
        assert client.list_datasets()  # the built-in digits
        with pytest.raises(maas.PermissionDenied, match="admin"):
            client.register_model("m", "mlp", mlp_weights(), shared=True)
        with pytest.raises(maas.PermissionDenied):
            client.create_key("acme", ["admin"])


def test_revoked_key_is_refused_within_seconds(gateway: Gateway) -> None:
    with gateway.client() as admin:
        made = admin.create_key("acme", ["infer"], "soon revoked")
        assert [k.key_id for k in admin.list_keys("acme")] == [made.key.key_id]
        with maas.Client(gateway.target, api_key=made.api_key) as client:
            assert client.is_ready()
            admin.revoke_key(made.key.key_id)
            revoked_at = time.monotonic()
            while True:
                try:
                    client.is_ready()
                except maas.Unauthenticated:
                    break
                assert time.monotonic() - revoked_at < 3, "still accepted 3 s after revoke"
                time.sleep(0.1)
        assert admin.list_keys("acme") == []
        with pytest.raises(maas.NotFound):
            admin.revoke_key(made.key.key_id)


def test_models_are_per_tenant_and_shared_ones_for_all(gateway: Gateway) -> None:
    acme, globex = gateway.key("acme"), gateway.key("globex")
    with gateway.client() as admin:
        admin.register_model("public", "mlp", mlp_weights(), shared=True)
    with gateway.client(acme) as client:
        assert client.register_model("m", "mlp", mlp_weights()).model == "m"
        assert client.register_model("m", "mlp", mlp_weights()).version == "2"
        models = {m.name: m for m in client.list_models()}
        assert set(models) == {"m", "public"}
        assert models["public"].shared and not models["m"].shared
        assert client.get_model("m").versions[0].model == "m"
        assert client.model_metadata("public").name == "public"
    with gateway.client(globex) as client:
        with pytest.raises(maas.ModelNotFound):
            client.get_model("m")
        with pytest.raises(maas.ModelNotFound):
            client.model_metadata("m")
        assert [m.name for m in client.list_models()] == ["public"]
        assert client.register_model("m", "mlp", mlp_weights()).version == "1"  # its own


def write_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, features=rng.random((40, 8, 8), np.float32),
             labels=rng.integers(0, 10, 40))
    return path


def test_datasets_and_training_jobs_are_per_tenant(gateway: Gateway, tmp_path: Path) -> None:
    acme, globex = gateway.key("acme"), gateway.key("globex")
    with gateway.client(acme) as client:
        client.upload_dataset(write_npz(tmp_path / "d.npz"), "mine")
        assert client.get_dataset("mine").name == "mine"
        job = client.train({**DIGITS_SPEC, "model_name": "tuned", "dataset": "mine"}).job
        assert (job.spec.model_name, job.spec.dataset) == ("tuned", "mine")
        assert [j.job_id for j in client.list_training_jobs()] == [job.job_id]
    with gateway.client(globex) as client:
        with pytest.raises(maas.NotFound):
            client.get_dataset("mine")
        assert [d.name for d in client.list_datasets()] == ["addition", "digits", "majority",
                                                            "parity"]
        with pytest.raises(maas.InvalidArgument, match="unknown dataset"):
            client.train({**DIGITS_SPEC, "model_name": "x", "dataset": "mine"})
        with pytest.raises(maas.NotFound):
            client.training_job(job.job_id)
        with pytest.raises(maas.NotFound):
            client._call(client._training.CancelTrainingJob,
                         tpb.CancelTrainingJobRequest(job_id=job.job_id), None)
        with pytest.raises(grpc.RpcError) as watched:
            next(iter(client._training.WatchTrainingJob(
                tpb.WatchTrainingJobRequest(job_id=job.job_id), timeout=5)))
        assert watched.value.code() == grpc.StatusCode.NOT_FOUND
        assert client.list_training_jobs() == []
    with gateway.client(acme) as client:
        assert client.training_job(job.job_id).job.state == tpb.TrainingJob.QUEUED


def test_async_inference_jobs_are_per_tenant(gateway: Gateway) -> None:
    with gateway.client() as admin:
        admin.register_model("mlp", "mlp", mlp_weights(), shared=True)
    x = {"input": np.zeros((1, 64), np.float32)}
    with gateway.client(gateway.key("acme")) as client:
        job = client.submit("mlp", x)  # queued: no worker here
        assert job.model == "mlp" and client.get_job(job.job_id).job_id == job.job_id
    with gateway.client(gateway.key("globex")) as client:
        with pytest.raises(maas.NotFound):
            client.get_job(job.job_id)
        with pytest.raises(maas.NotFound):
            client.cancel_job(job.job_id)
        own = client.submit("mlp", x)
        assert own.job_id != job.job_id


def test_tritonclient_sends_the_key_in_headers(gateway: Gateway) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(gateway.target)
    with pytest.raises(InferenceServerException, match=r"UNAUTHENTICATED|API key"):
        client.is_server_ready()
    headers = {"authorization": f"Bearer {gateway.key('acme', 'infer')}"}
    assert client.is_server_ready(headers=headers)
    client.close()


@pytest.fixture
def limited(redis_url: str, tmp_path: Path) -> Iterator[str]:
    with running_gateway(redis_url, tmp_path / "data", tenant_rate_per_s=2.0,
                         max_tensor_elements=100) as port:
        yield f"127.0.0.1:{port}"


def test_tenant_rate_limit_is_quota_failure(limited: str) -> None:
    with maas.Client(limited, api_key=None) as client, \
            pytest.raises(maas.QuotaExceeded) as caught:
        for _ in range(20):
            client.is_ready()
    err = caught.value
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [q.subject for q in err.quota_violations] == ["tenant:"]
    assert "MAAS_TENANT_RATE_PER_S" in err.quota_violations[0].description
    assert err.retry_delay_s is not None and 0 < err.retry_delay_s <= 1
    time.sleep(err.retry_delay_s)
    with maas.Client(limited) as client:
        assert client.is_ready()  # the bucket refilled


def test_tensor_element_limit(limited: str) -> None:
    with maas.Client(limited) as client:
        time.sleep(1)  # a full bucket
        client.register_model("mlp", "mlp", mlp_weights())
        request = infer_request("mlp", {"input": np.zeros((2, 64), np.float32)})  # 128 > 100
        with pytest.raises(maas.MaasError) as caught:
            client._call(client._v2.ModelInfer, request, None)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "TOO_MANY_ELEMENTS"
    assert "MAAS_MAX_TENSOR_ELEMENTS" in caught.value.message
