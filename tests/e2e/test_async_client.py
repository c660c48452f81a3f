"""`maas.AsyncClient` through the real processes, for the methods it gained from `Client`:
models (register, upload, list, get, download, aliases, delete a version), datasets, a short
training job followed with `async for`, workers and dead letters. (Inference and async jobs:
tests/e2e/test_inference.py, test_auth_cluster.py; API keys: test_auth_cluster.py.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save

import maas
from maas.errors import ModelNotFound, ModelVersionInUse
from maas.training_client import TERMINAL
from maas.v1 import training_service_pb2 as tpb
from runtime.architectures import get_architecture
from tests.conftest import Cluster
from tests.model_archives import SPECS, torchscript

pytestmark = pytest.mark.timeout(180)

# A job that ends quickly (as tests/e2e/test_training.py's SHORT_MLP).
SHORT_MLP = {"model_name": "async-trained", "architecture": "mlp", "dataset": "digits",
             "optimizer": "adam", "lr": 0.003, "batch_size": 32, "epochs": 0, "max_steps": 5}


def mlp_weights() -> bytes:
    arch = get_architecture("mlp")
    return save(arch.build(arch.resolve_config(None)).state_dict())


async def test_models_register_list_get_download_and_aliases(cluster: Cluster,
                                                             tmp_path: Path) -> None:
    weights = mlp_weights()
    chunks: list[int] = []
    async with maas.AsyncClient(cluster.target, timeout_s=60) as client:
        first = await client.register_model("async-mlp", "mlp", weights)
        second = await client.register_model("async-mlp", "mlp", weights,
                                             progress=chunks.append)
        assert (first.version, second.version, sum(chunks)) == ("1", "2", len(weights))
        assert "async-mlp" in {m.name for m in await client.list_models()}
        model = await client.get_model("async-mlp")
        assert (model.latest_version, [v.version for v in model.versions]) == ("2", ["1", "2"])

        got = await client.download_model("async-mlp", tmp_path, version=1)
        assert got.version == "1"
        assert (tmp_path / "model.safetensors").read_bytes() == weights
        manifest = json.loads((tmp_path / "manifest.json").read_text())
        assert manifest["weights_sha256"] == hashlib.sha256(weights).hexdigest()

        aliased = await client.set_model_alias("async-mlp", "production", 1)
        assert aliased.aliases["production"] == "1"
        with pytest.raises(ModelVersionInUse):
            await client.delete_model_version("async-mlp", 1)
        assert "production" not in (await client.delete_model_alias("async-mlp",
                                                                    "production")).aliases
        left = await client.delete_model_version("async-mlp", 1)
        assert [v.version for v in left.versions] == ["2"]
        with pytest.raises(ModelNotFound):
            await client.get_model("async-nope")


async def test_an_archive_upload_serves(cluster: Cluster) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    async with maas.AsyncClient(cluster.target, timeout_s=60) as client:
        version = await client.upload_model("async-arch", torchscript(2.0, 1.0), *SPECS)
        assert version.version == "1" and await client.is_ready()
        out = await client.infer("async-arch", {"x": x})
    assert out["y"].tolist() == (x * 2 + 1).tolist()


async def test_datasets_training_and_the_queue(cluster: Cluster, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "tiny.npz"
    np.savez(data, features=rng.random((32, 64), np.float32), labels=rng.integers(0, 10, 32))
    async with maas.AsyncClient(cluster.target, timeout_s=60) as client:
        assert (await client.upload_dataset(data, "async-tiny")).name == "async-tiny"
        assert (await client.get_dataset("async-tiny")).name == "async-tiny"
        assert "async-tiny" in {d.name for d in await client.list_datasets()}
        await client.delete_dataset("async-tiny")
        assert "async-tiny" not in {d.name for d in await client.list_datasets()}

        handle = await client.train(SHORT_MLP)
        events = [event async for event in handle.watch(timeout_s=120)]
        assert events[-1].state in TERMINAL
        job = await handle.wait(timeout_s=60)  # already ended: returns at once
        assert job.state == tpb.TrainingJob.SUCCEEDED, job.error
        assert (await client.training_job(handle.id)).job.model_version == job.model_version
        assert handle.id in {j.job_id for j in await client.list_training_jobs()}

        assert {w.worker_id for w in await client.workers()}
        assert await client.dead_letters("cnn") == []
        assert await client.redrive("cnn") == []
