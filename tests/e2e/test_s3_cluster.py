"""A cluster whose artifact store is a bucket (MAAS_ARTIFACT_URL=s3://...) on a real
S3-compatible server: the gateway and the worker share no directory, so every model the
worker serves came through the bucket. A model streamed up is served and streams back whole;
a training job's checkpoints reach the bucket; the gateway's memory stays flat while a 300 MB
model streams through it into the bucket."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import maas
from bench.upload_memory import BOUND_MIB, peak_rss, write_mlp_weights
from runtime.architectures import get_architecture
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.s3_server import S3Server, serving_bucket

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
BUCKET = "maas-e2e"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from serving_bucket(tmp_path_factory, BUCKET)


@pytest.fixture(scope="module")
def s3_cluster(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("s3-cluster")
    # The worker is another node: its own data dir, so its own cache.
    worker = {**s3.env, "MAAS_DATA_DIR": str(tmp / "worker-node")}
    running = start_cluster(tmp, workers=1, artifact_url=f"s3://{BUCKET}/e2e",
                            service_env={"gateway": s3.env, "scheduler": s3.env,
                                         "worker-1": worker})
    yield running
    stop_cluster(running)


def test_a_streamed_model_is_served_from_the_bucket_and_downloads_whole(
        s3: S3Server, s3_cluster: Cluster, tmp_path: Path) -> None:
    arch = get_architecture("mlp")
    torch.manual_seed(1)
    weights = tmp_path / "w.safetensors"
    save_file(arch.build(arch.resolve_config(None)).state_dict(), str(weights))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    with maas.Client(s3_cluster.target) as client:
        version = client.register_model("s3-mlp", "mlp", weights)  # a Path: UploadModel
        assert version.weights_sha256 == sha
        out = client.infer("s3-mlp", {"input": np.ones((2, 64), np.float32)}, timeout_s=60)
        assert out["output"].shape == (2, 10)
        client.download_model("s3-mlp", tmp_path / "dl")
    got = (tmp_path / "dl" / "model.safetensors").read_bytes()
    assert hashlib.sha256(got).hexdigest() == sha
    bucket = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")
    bucket.head_object(Bucket=BUCKET, Key=f"e2e/weights/{sha}.safetensors")
    worker_copy = (s3_cluster.local.data_dir.parent / "worker-node" / "artifacts" / "cache"
                   / "weights" / f"{sha}.safetensors")
    assert worker_copy.read_bytes() == got  # the worker downloaded it into its cache


def test_a_training_job_saves_its_checkpoints_in_the_bucket(
        s3: S3Server, s3_cluster: Cluster) -> None:
    """The worker's job directory is its node's scratch: what it checkpoints reaches the bucket
    (a job resumed on another node continues from there)."""
    with maas.Client(s3_cluster.target, timeout_s=60) as client:
        job = client.train({"name": "s3-trained", "architecture": "mlp", "dataset": "digits",
                            "optimizer": "adam", "lr": 0.003, "batch_size": 32, "epochs": 0,
                            "max_steps": 5}).wait(timeout_s=60)
    assert job.state == job.SUCCEEDED, job.error
    assert job.latest_checkpoint.global_step == 5
    bucket = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")
    listed = bucket.list_objects_v2(Bucket=BUCKET, Prefix=f"e2e/jobs/{job.job_id}/")
    names = {o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", [])}
    assert "spec.json" in names
    assert names - {"spec.json"}, f"no checkpoint in the bucket: {names}"


def test_a_300_mb_model_into_the_bucket_keeps_the_gateway_memory_flat(
        s3_cluster: Cluster, tmp_path: Path) -> None:
    """The resumable upload holds one part at a time: the gateway's peak RSS while it takes
    300 MB grows by less than the 64 MiB the design promises (bench.upload_memory: 2 GB)."""
    warm_up, weights = tmp_path / "warm.safetensors", tmp_path / "big.safetensors"
    # First use of the resumable path, through several parts (8 MiB each) and the threads
    # that send them: what is measured next is the gateway's steady state.
    warm_config = write_mlp_weights(warm_up, 64)
    config = write_mlp_weights(weights, 300)
    with maas.Client(s3_cluster.target, timeout_s=120) as client:
        client.register_model("s3-warm-up", "mlp", warm_up, warm_config)
        with peak_rss(s3_cluster.service("gateway").pid) as rss:
            version = client.register_model("s3-big", "mlp", weights, config)
    assert version.weights_bytes == weights.stat().st_size
    print(f"\ngateway RSS {rss.before_mib:.1f} -> peak {rss.peak_mib:.1f} MiB while taking "
          f"{weights.stat().st_size / 2**20:.0f} MiB into the bucket")
    assert rss.growth_mib < BOUND_MIB, f"gateway peak RSS grew {rss.growth_mib:.1f} MiB"
