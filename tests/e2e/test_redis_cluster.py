"""maas on a real Redis Cluster (3 primaries + 3 replicas) reached by `redis+cluster://`:
the processes as `maas up` starts them serve v2 inference, a burst over two models whose
queues live on different primaries, async jobs, a training job whose model then serves, and
queue statistics; the ledger then finds nothing lost and nothing duplicated. A service
given a URL of the wrong kind refuses to start (exit status 2, one line on stderr).

The tests share one maas cluster and run in file order: the ledger test comes last and
audits the work of those before it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import maas
from maas.cli.up import free_port
from maas.client import job_outputs
from maas.v1 import training_service_pb2 as tpb
from maas.v1.inference_service_pb2 import InferenceJob
from scheduler import keys
from tests.conftest import Cluster, RedisServer, sdk_client_fixture, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.models import reference_model, run_reference, run_registered
from tests.redis_cluster import RedisClusterServer

pytestmark = pytest.mark.timeout(180)

INPUTS = {"cnn": (1, 28, 28), "mlp": (64,)}
TRAINED = "rc-mlp"  # its hash slot (12271) is on the third primary: cnn 7058, mlp 5390
SHORT_MLP: dict[str, Any] = {"name": TRAINED, "architecture": "mlp", "dataset": "digits",
                             "optimizer": "adam", "lr": 0.003, "batch_size": 32, "epochs": 0,
                             "max_steps": 12}
BURST = 64


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            redis_cluster: RedisClusterServer) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("on-redis-cluster"),
                            redis_cluster=redis_cluster)
    yield running
    stop_cluster(running)
    codes = {s.name: s.proc.returncode for s in running.local.services if s.proc}
    assert set(codes.values()) == {0}, codes  # SIGTERM ends every blocking read cleanly


client = sdk_client_fixture()


def sample(model: str, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *INPUTS[model]), dtype=np.float32)


def assert_reference(model: str, x: np.ndarray, out: np.ndarray) -> None:
    assert np.abs(out - run_reference(reference_model(model), x)).max() <= 1e-5


# ---- serving ---------------------------------------------------------------------------


def test_the_processes_use_the_cluster_url(cluster: Cluster,
                                           redis_cluster: RedisClusterServer) -> None:
    assert cluster.redis is redis_cluster
    assert redis_cluster.url.startswith("redis+cluster://")
    assert len(redis_cluster.nodes) == 6
    with redis_cluster.client() as r:
        assert r.cluster_info()["cluster_state"] == "ok"
        assert len(r.get_primaries()) == 3


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_v2_model_infer_equals_the_reference(cluster: Cluster, model: str) -> None:
    x = sample(model, 4, seed=len(model))
    triton = grpcclient.InferenceServerClient(cluster.target)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = triton.infer(model, [inp], request_id=f"rc-{model}", client_timeout=60)
    assert got.get_response().id == f"rc-{model}"
    assert_reference(model, x, got.as_numpy("output"))


async def test_a_burst_over_both_models_is_answered_right(
        cluster: Cluster, redis_cluster: RedisClusterServer) -> None:
    """64 concurrent calls, half to each model: each model's queue is on its own primary."""
    holders = {m: redis_cluster.primary_of(keys.stream(m)) for m in INPUTS}
    print(f"primaries: cnn queue on :{holders['cnn'].port}, mlp queue on "
          f":{holders['mlp'].port}")
    assert holders["cnn"].port != holders["mlp"].port
    calls = [(("cnn", "mlp")[i % 2], sample(("cnn", "mlp")[i % 2], 1 + i % 3, seed=100 + i))
             for i in range(BURST)]
    async with maas.AsyncClient(cluster.target, timeout_s=60) as sdk:
        outs = await asyncio.gather(*(sdk.infer(m, {"input": x}) for m, x in calls))
    for (model, x), out in zip(calls, outs, strict=True):
        assert_reference(model, x, out["output"])
    for model, node in holders.items():  # the model's keys are on that primary itself
        with node.client() as r:
            assert r.exists(keys.stream(model)) == 1
            assert r.exists(keys.model_record(model)) == 1


def test_an_async_job_succeeds_with_its_result(client: maas.Client) -> None:
    x = sample("cnn", 3, seed=9)
    job = client.submit("cnn", {"input": x})
    assert job.job_id.startswith("cnn:")
    done = client.wait_job(job.job_id, timeout_s=30)
    assert done.state == InferenceJob.SUCCEEDED and done.model_version == "1"
    assert_reference("cnn", x, job_outputs(done)["output"])
    assert client.get_job(job.job_id).state == InferenceJob.SUCCEEDED


def trained_reference(cluster: Cluster, client: maas.Client, x: np.ndarray) -> np.ndarray:
    """The registered weights of the trained model, run in-process."""
    return run_registered(client.get_model(TRAINED).versions[0],
                          cluster.local.data_dir / "artifacts", "mlp", x)


def test_a_trained_model_serves(cluster: Cluster, client: maas.Client,
                                redis_cluster: RedisClusterServer) -> None:
    job = client.train(SHORT_MLP).wait(timeout_s=120)
    assert job.state == tpb.TrainingJob.SUCCEEDED, job.error
    assert job.model_version == f"{TRAINED}:1"
    assert job.latest_checkpoint.global_step == 12
    x = sample("mlp", 5, seed=3)
    out = client.infer(TRAINED, {"input": x}, version="1", timeout_s=60)["output"]
    assert out.shape == (5, 10)
    assert np.abs(out - trained_reference(cluster, client, x)).max() <= 1e-5
    ports = {m: redis_cluster.primary_of(keys.stream(m)).port for m in ("cnn", "mlp", TRAINED)}
    print(f"queue primaries: {ports}")
    assert len(set(ports.values())) == 3  # the three models' queues span every primary


# ---- queue statistics ------------------------------------------------------------------


def test_queue_stats_list_the_models(client: maas.Client) -> None:
    stats = {s.model: s for s in client.queue_stats()}
    assert {"cnn", "mlp", TRAINED} <= set(stats)
    for model in ("cnn", "mlp"):
        assert stats[model].serving_workers >= 1
        assert sum(p.delivered_total for p in stats[model].priorities) >= BURST // 2
        assert all(p.waiting == 0 and p.leased == 0 for p in stats[model].priorities)


def test_queues_stats_from_the_cli(cluster: Cluster) -> None:
    done = subprocess.run([sys.executable, "-m", "maas.cli.main", "queues", "stats",
                           "--target", cluster.target, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    models = {m["model"]: m for m in json.loads(done.stdout)["models"]}
    assert {"cnn", "mlp"} <= set(models)
    assert int(models["cnn"]["serving_workers"]) >= 1


# ---- the audit (after the work above) --------------------------------------------------


def test_nothing_lost_nothing_duplicated(cluster: Cluster,
                                         redis_cluster: RedisClusterServer) -> None:
    ledger = check(redis_cluster.url, "redis-cluster e2e", ["cnn", "mlp", TRAINED])
    # 2 v2 calls, the burst, the async job, one call to the trained model, at least.
    assert ledger.accepted >= BURST + 4
    assert ledger.completed == ledger.accepted
    assert set(ledger.states) == {"SUCCEEDED"}


# ---- a URL of the wrong kind: the service refuses to start -----------------------------


def service_env(redis_url: str, tmp: Path) -> dict[str, str]:
    return {**os.environ, "MAAS_REDIS_URL": redis_url, "MAAS_DATA_DIR": str(tmp / "data"),
            "MAAS_GATEWAY_PORT": str(free_port()), "MAAS_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1"}


def start_refused(module: str, redis_url: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module], env=service_env(redis_url, tmp),
                          capture_output=True, text=True, timeout=60)


def assert_refused(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    [line] = [s for s in done.stderr.splitlines() if s.startswith("maas: ")]
    return line


@pytest.mark.parametrize("module", ["scheduler", "gateway", "worker"])
def test_a_cluster_url_for_a_plain_redis_is_refused(
        module: str, redis_server: RedisServer, tmp_path: Path) -> None:
    done = start_refused(module, f"redis+cluster://127.0.0.1:{redis_server.port}", tmp_path)
    line = assert_refused(done)
    assert "not a cluster node" in line and "redis://" in line, line


@pytest.mark.parametrize("module", ["scheduler", "gateway", "worker"])
def test_a_plain_url_for_a_cluster_node_is_refused(
        module: str, redis_cluster: RedisClusterServer, tmp_path: Path) -> None:
    node = redis_cluster.nodes[1]
    done = start_refused(module, f"redis://127.0.0.1:{node.port}/0", tmp_path)
    line = assert_refused(done)
    assert "node of a Redis Cluster" in line and "redis+cluster://" in line, line


def test_any_reachable_node_names_the_cluster(redis_cluster: RedisClusterServer,
                                              tmp_path: Path) -> None:
    """A cluster URL whose first node is down, and that names one node of six: the
    scheduler starts (it learns the rest from the node that answers) and stops cleanly."""
    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{redis_cluster.nodes[4].port}"
    proc = subprocess.Popen([sys.executable, "-m", "scheduler"],
                            env=service_env(url, tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(3)  # running, not refused
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "maas: " not in stderr and "Traceback" not in stderr, stderr
