"""Model lifecycle through the real processes: uploaded TorchScript / torch.export archives
served by workers, Triton's repository RPCs with tritonclient, aliases, and a hot swap of
`production` under concurrent load that fails no request."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import maas
from maas.cli.main import main as cli_main
from maas.cli.up import wait_models_ready
from maas.v1.model_service_pb2 import ModelVersionState
from runtime.queue.v1.queue_pb2 import WorkerHeartbeat
from scheduler import keys
from tests.conftest import Cluster
from tests.model_archives import CONFIG, SPECS, exported, torchscript

pytestmark = pytest.mark.timeout(180)
X = np.arange(12, dtype=np.float32).reshape(3, 4)


def _infer(client: grpcclient.InferenceServerClient, model: str,
           version: str = "") -> tuple[str, np.ndarray]:
    inp = grpcclient.InferInput("x", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    result = client.infer(model, [inp], model_version=version, client_timeout=30)
    return result.get_response().model_version, result.as_numpy("y")


@pytest.fixture(scope="module")
def triton(cluster: Cluster) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(cluster.target)
    yield client
    client.close()


def test_archives_serve_through_sdk_and_tritonclient(
        cluster: Cluster, triton: grpcclient.InferenceServerClient) -> None:
    with maas.Client(cluster.target) as client:
        assert client.upload_model("arch", torchscript(2.0, 1.0), *SPECS).version == "1"
    triton.load_model("arch", config=CONFIG, files={"file:2/model.pt2": exported(3.0)})
    assert _infer(triton, "arch", "1")[1].tolist() == (X * 2 + 1).tolist()
    version, y = _infer(triton, "arch")  # latest: the torch.export version
    assert (version, y.tolist()) == ("2", (X * 3).tolist())
    with maas.Client(cluster.target) as client:
        client.set_model_alias("arch", "production", 1)
        out = client.infer("arch", {"x": X}, version="production")
    assert out["y"].tolist() == (X * 2 + 1).tolist()
    assert _infer(triton, "arch", "production")[0] == "1"  # the concrete version answers


def test_unload_and_load_with_tritonclient(cluster: Cluster,
                                           triton: grpcclient.InferenceServerClient) -> None:
    triton.load_model("toggle", config=CONFIG, files={"file:1/model.pt": torchscript(1.0)})
    wait_models_ready(cluster.target, ["toggle"], cluster.local)
    triton.unload_model("toggle")
    assert not triton.is_model_ready("toggle")
    with pytest.raises(InferenceServerException) as caught:
        _infer(triton, "toggle")
    assert caught.value.status() == str(grpc.StatusCode.UNAVAILABLE)
    assert "unloaded" in str(caught.value.message())
    triton.load_model("toggle")
    assert triton.is_model_ready("toggle")
    assert _infer(triton, "toggle")[1].tolist() == X.tolist()


def _broken(data: bytes) -> bytes:
    """A TorchScript archive with a valid layout whose code does not compile."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            is_code = "/code/" in info.filename and info.filename.endswith(".py")
            dst.writestr(info.filename, b"def broken(:\n" if is_code else body)
    return out.getvalue()


def test_a_broken_archive_is_refused_and_the_workers_go_on(
        cluster: Cluster, triton: grpcclient.InferenceServerClient) -> None:
    """Verification loads the archive in a sandboxed runner: one that does not load is
    refused at registration (INVALID_ARGUMENT, torch's error named) and nothing else
    notices."""
    with maas.Client(cluster.target) as client:
        with pytest.raises(maas.InvalidArgument) as caught:
            client.upload_model("broken", _broken(torchscript(1.0)), *SPECS)
        assert "cannot load the archive" in caught.value.message
        version = client.get_model("broken").versions[-1]
        assert version.state == ModelVersionState.MODEL_VERSION_STATE_REJECTED
        assert "cannot load the archive" in version.state_reason
        with pytest.raises(maas.MaasError) as refused:
            client.infer("broken", {"x": X})
        assert refused.value.code in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.FAILED_PRECONDITION)
        assert client.infer("mlp", {"input": np.zeros((1, 64), np.float32)})["output"].shape \
            == (1, 10)
    assert all(cluster.service(f"worker-{i}").poll() is None for i in (1, 2))


def test_cli_alias_and_delete_version(cluster: Cluster, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    with maas.Client(cluster.target) as client:
        for scale in (1.0, 2.0):
            client.upload_model("cli-m", torchscript(scale), *SPECS)
    flags = ["--target", cluster.target, "--json"]
    assert cli_main(["models", "alias", "set", "cli-m", "production", "1", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["aliases"] == {"production": "1"}
    assert cli_main(["models", "delete-version", "cli-m", "1", *flags]) == 1
    assert "FAILED_PRECONDITION" in capsys.readouterr().err
    assert cli_main(["models", "alias", "delete", "cli-m", "production", *flags]) == 0
    capsys.readouterr()
    assert cli_main(["models", "delete-version", "cli-m", "1", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["versions"] == ["2"]


def _wait_loaded_everywhere(cluster: Cluster, loaded: list[str], timeout_s: float = 60) -> None:
    """Until the heartbeat of every live worker lists each of `loaded`."""
    client = cluster.redis.client()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ids = [i.decode() for i in client.zrangebyscore(keys.workers_index(),
                                                            time.time() * 1000, "+inf")]
            beats = [WorkerHeartbeat.FromString(raw) for i in ids
                     if (raw := client.get(keys.worker(i)))]
            if beats and all(set(loaded) <= set(b.models) for b in beats):
                return
            time.sleep(0.2)
        raise AssertionError(f"not every worker loaded {loaded}: {[list(b.models) for b in beats]}")
    finally:
        client.close()


def test_hot_swap_of_production_under_load_fails_no_request(
        cluster: Cluster, triton: grpcclient.InferenceServerClient) -> None:
    """8 callers on `production` while it moves between versions 1 and 2 forty times."""
    expected = {"1": (X * 1).tolist(), "2": (X * 2).tolist()}
    with maas.Client(cluster.target) as client:
        for scale in (1.0, 2.0):
            client.upload_model("swap", torchscript(scale), *SPECS)
        client.set_model_alias("swap", "production", 1)
    # Both versions loaded by every worker before the clock starts (workers preload the
    # runners of latest and aliased versions of archives).
    _wait_loaded_everywhere(cluster, ["swap:1", "swap:2"])
    for version in ("1", "2"):
        _infer(triton, "swap", version)
    stop = threading.Event()
    answers: list[tuple[str, list[list[float]]]] = []
    failures: list[str] = []

    def call_until_stopped() -> None:
        own = grpcclient.InferenceServerClient(cluster.target)
        try:
            while not stop.is_set():
                try:
                    version, y = _infer(own, "swap", "production")
                    answers.append((version, y.tolist()))
                except InferenceServerException as exc:
                    failures.append(str(exc))
        finally:
            own.close()

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool, maas.Client(cluster.target) as admin:
        callers = [pool.submit(call_until_stopped) for _ in range(8)]
        for swap in range(40):
            admin.set_model_alias("swap", "production", 2 - swap % 2)
            time.sleep(0.05)
        stop.set()
        for caller in callers:
            caller.result()
    elapsed = time.monotonic() - started
    print(f"hot swap: {len(answers)} requests, 40 swaps, {len(failures)} failures in "
          f"{elapsed:.1f}s", file=sys.stderr)
    assert failures == []
    assert len(answers) >= 40
    assert {v for v, _ in answers} == {"1", "2"}
    assert all(y == expected[v] for v, y in answers)
