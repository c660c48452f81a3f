"""A cluster with MAAS_AUTH=on through the real processes: tritonclient with headers, the SDK,
tenant models served by the workers, and `maas keys` on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from safetensors.torch import save
from tritonclient.utils import InferenceServerException

import maas
from runtime.architectures import get_architecture
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.models import reference_model, run_reference

pytestmark = pytest.mark.timeout(180)

MAAS = [sys.executable, "-m", "maas.cli.main"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("auth"), workers=1, auth="on")
    yield running
    stop_cluster(running)


def cli(cluster: Cluster, *args: str, api_key: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAAS_API_KEY": api_key}
    return subprocess.run([*MAAS, *args, "--target", cluster.target], env=env, text=True,
                          capture_output=True, timeout=60, check=False)


def tenant_key(cluster: Cluster, tenant: str, scopes: str = "infer,train") -> str:
    done = cli(cluster, "keys", "create", "--tenant", tenant, "--scopes", scopes, "--json",
               api_key=cluster.admin_key)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["key"]["tenant"] == tenant and doc["key"]["scopes"] == scopes.split(",")
    return str(doc["api_key"])


def test_tritonclient_with_headers(secured: Cluster) -> None:
    headers = {"authorization": f"Bearer {tenant_key(secured, 'acme', 'infer')}"}
    client = grpcclient.InferenceServerClient(secured.target)
    with pytest.raises(InferenceServerException, match="API key"):
        client.is_model_ready("cnn")
    assert client.is_model_ready("cnn", headers=headers)  # the shared demo model
    x = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    inp = grpcclient.InferInput("input", [2, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer("cnn", [inp], headers=headers).as_numpy("output")
    assert np.abs(got - run_reference(reference_model("cnn"), x)).max() <= 1e-5
    with pytest.raises(InferenceServerException, match=r"UNAUTHENTICATED|API key"):
        client.infer("cnn", [inp], headers={"authorization": "Bearer nope"})
    client.close()


async def test_async_client_sends_the_key(secured: Cluster, tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((1, 64), dtype=np.float32)
    arch = get_architecture("mlp")
    weights = save(arch.build(arch.resolve_config(None)).state_dict())
    async with maas.AsyncClient(secured.target, api_key=tenant_key(secured, "acme")) as client:
        out = await client.infer("mlp", {"input": x})
        # Streams too, both ways (grpc.aio files an interceptor under one call kind only).
        uploaded = await client.register_model("async-mlp", "mlp", weights)
        downloaded = await client.download_model("async-mlp", tmp_path)
    assert np.abs(out["output"] - run_reference(reference_model("mlp"), x)).max() <= 1e-5
    assert downloaded.weights_sha256 == uploaded.weights_sha256
    async with maas.AsyncClient(secured.target, api_key="") as anonymous:
        with pytest.raises(maas.Unauthenticated):
            await anonymous.infer("mlp", {"input": x})


async def test_async_client_manages_keys(secured: Cluster) -> None:
    async with maas.AsyncClient(secured.target, api_key=secured.admin_key) as admin:
        created = await admin.create_key("umbrella", ["infer"], "async")
        assert created.api_key and created.key.tenant == "umbrella"
        assert [k.key_id for k in await admin.list_keys("umbrella")] == [created.key.key_id]
        assert (await admin.revoke_key(created.key.key_id)).key_id == created.key.key_id
        assert await admin.list_keys("umbrella") == []


def test_a_tenants_model_runs_for_it_alone(secured: Cluster) -> None:
    arch = get_architecture("mlp")
    weights = save(arch.build(arch.resolve_config(None)).state_dict())
    x = np.ones((1, 64), np.float32)
    with maas.Client(secured.target, api_key=tenant_key(secured, "acme")) as acme:
        acme.register_model("private-mlp", "mlp", weights)
        assert acme.infer("private-mlp", {"input": x}, timeout_s=60)["output"].shape == (1, 10)
    with maas.Client(secured.target, api_key=tenant_key(secured, "globex")) as globex:
        with pytest.raises(maas.ModelNotFound):
            globex.infer("private-mlp", {"input": x})
        assert globex.infer("mlp", {"input": x})["output"].shape == (1, 10)  # shared


def test_cli_keys_list_and_revoke(secured: Cluster) -> None:
    key = tenant_key(secured, "initech", "infer")
    listed = cli(secured, "keys", "list", "--tenant", "initech", "--json",
                 api_key=secured.admin_key)
    (record,) = json.loads(listed.stdout)["keys"]
    assert key not in listed.stdout  # ids and bindings only
    assert cli(secured, "models", "list", api_key=key).returncode == 0
    denied = cli(secured, "keys", "list", api_key=key)
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr
    revoked = cli(secured, "keys", "revoke", record["key_id"], api_key=secured.admin_key)
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(1.5)  # the gateway caches a key for at most a second
    refused = cli(secured, "models", "list", api_key=key)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr


def test_a_tenant_trains_and_serves_its_own_model(secured: Cluster, tmp_path: Path) -> None:
    """The worker trains on the tenant's dataset, from a shared base, into the tenant's model."""
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, features=rng.random((64, 64), np.float32), labels=rng.integers(0, 10, 64))
    spec = {"model_name": "tuned", "architecture": "mlp", "dataset": "tiny", "init_from": "mlp",
            "epochs": 1, "batch_size": 16, "seed": 0}
    with maas.Client(secured.target, api_key=tenant_key(secured, "acme")) as acme:
        acme.upload_dataset(data, "tiny")
        job = acme.train(spec).wait(timeout_s=120)
        assert job.state == job.SUCCEEDED, job.error
        assert (job.model_version, job.spec.dataset, job.spec.init_from) == (
            "tuned:1", "tiny", "mlp")
        assert acme.infer("tuned", {"input": np.ones((1, 64), np.float32)},
                          timeout_s=60)["output"].shape == (1, 10)
    with maas.Client(secured.target, api_key=tenant_key(secured, "globex")) as globex:
        with pytest.raises(maas.ModelNotFound):
            globex.get_model("tuned")
        with pytest.raises(maas.NotFound):
            globex.training_job(job.job_id)


def test_maas_up_auth_writes_a_private_admin_key(tmp_path: Path) -> None:
    from maas.cli.up import free_port

    port = free_port()
    done = subprocess.run([*MAAS, "up", "--auth", "--no-demo", "--exit-after-demo", "--port",
                           str(port), "--data-dir", str(tmp_path / "d"), "--workers", "1"],
                          text=True, capture_output=True, timeout=150, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    key_file = tmp_path / "d" / "admin.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert "maas ready" in done.stdout and "(plaintext, auth on)" in done.stdout
    assert key not in done.stdout  # only the file holds it
    # Its redis-server needs a password: kept in the data directory, printed masked only.
    password_file = tmp_path / "d" / "redis.password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert password_file.read_text().strip() not in done.stdout + done.stderr
    assert "[maas] redis redis://:****@127.0.0.1:" in done.stdout
