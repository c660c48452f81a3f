"""Uploaded models attacked as a hostile tenant would, against a real gateway and worker:
refused at registration, cut when they spin, quarantined when they keep failing, and
never slowing another tenant's model down."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import maas
from maas.api_keys import ensure_key_file
from maas.cli.up import register_demo_models
from maas.errors import ModelQuarantined, ModelTimeout, ModelVerifying
from maas.v1.model_service_pb2 import ModelVersionState
from tests.hostile_archives import (
    Prints,
    ReadsFile,
    Spins,
    Writer,
    loads_a_file,
    scripted,
    unknown_namespace,
)
from tests.inprocess import running_gateway
from tests.inprocess_worker import running_worker
from tests.model_archives import CONFIG, SPECS, torchscript

pytestmark = pytest.mark.timeout(120)
X = np.ones((2, 4), np.float32)
State = ModelVersionState


@pytest.fixture
def target(redis_url: str, tmp_path: Path) -> Iterator[str]:
    with running_gateway(redis_url, tmp_path) as port, \
            running_worker(redis_url, tmp_path, max_forward_ms=600, quarantine_after=2):
        yield f"127.0.0.1:{port}"


def test_archives_that_reach_for_files_or_other_namespaces_are_refused(target: str) -> None:
    hostile = {"from_file": scripted(ReadsFile("/etc/passwd")),
               "save": scripted(Writer("/tmp/planted")), "load": loads_a_file(),
               "evil::steal": unknown_namespace()}
    with maas.Client(target) as client:
        for op, archive in hostile.items():
            with pytest.raises(maas.InvalidArgument) as caught:
                client.upload_model(f"bad-{op.split(':')[-1]}", archive, *SPECS)
            assert f"{op if '::' in op else 'aten::' + op} is not allowed" in \
                caught.value.message, caught.value.message
            assert caught.value.violations[0].field == "archive"
        with pytest.raises(maas.NotFound):  # refused before anything was stored
            client.get_model("bad-from_file")
        # prim::Print shows only in the loaded graph: the worker's verifier refuses it, and
        # the version stays visible as REJECTED with the reason
        with pytest.raises(maas.InvalidArgument) as printing:
            client.upload_model("printer", scripted(Prints()), *SPECS)
        assert "prim::Print is not allowed (forward" in printing.value.message
        [version] = client.get_model("printer").versions
        assert version.state == State.MODEL_VERSION_STATE_REJECTED
        assert "prim::Print" in version.state_reason
        with pytest.raises(maas.MaasError):
            client.infer("printer", {"x": X})
    triton = grpcclient.InferenceServerClient(target)
    with pytest.raises(InferenceServerException) as refused:
        triton.load_model("t-bad", config=CONFIG,
                          files={"file:1/model.pt": scripted(ReadsFile("/etc/passwd"))})
    assert refused.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert "aten::from_file is not allowed" in str(refused.value.message())


def test_a_version_serves_only_once_verified(redis_url: str, tmp_path: Path) -> None:
    with running_gateway(redis_url, tmp_path, verify_timeout_s=0.5) as port:
        target = f"127.0.0.1:{port}"
        with maas.Client(target) as client:
            version = client.upload_model("later", torchscript(3.0), *SPECS)  # no worker yet
            assert version.state == State.MODEL_VERSION_STATE_VERIFYING
            assert client.get_model("later").latest_version == ""
            with pytest.raises(ModelVerifying):
                client.infer("later", {"x": X})
            with running_worker(redis_url, tmp_path):
                deadline = time.monotonic() + 60
                while client.get_model("later").versions[0].state != \
                        State.MODEL_VERSION_STATE_READY:
                    assert time.monotonic() < deadline, "never verified"
                    time.sleep(0.1)
                assert client.get_model("later").latest_version == "1"
                time.sleep(1.1)  # the registry's version cache (LATEST_CACHE_S) sees it too
                assert client.infer("later", {"x": X})["y"].tolist() == (X * 3).tolist()


def test_a_spinning_model_is_cut_then_quarantined(target: str) -> None:
    with maas.Client(target) as client:
        client.upload_model("spin", scripted(Spins(10**15)), *SPECS)
        for _ in range(2):  # MAAS_QUARANTINE_AFTER=2 in this fixture
            began = time.monotonic()
            with pytest.raises(ModelTimeout) as caught:
                client.infer("spin", {"x": X})
            assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "MAAS_MAX_FORWARD_MS" in caught.value.message
            assert time.monotonic() - began < 10
        time.sleep(1.1)  # the registry's version cache
        with pytest.raises(ModelQuarantined) as quarantined:
            client.infer("spin", {"x": X})
        assert quarantined.value.code == grpc.StatusCode.UNAVAILABLE
        [version] = client.get_model("spin").versions
        assert version.state == State.MODEL_VERSION_STATE_QUARANTINED
        assert "MODEL_TIMEOUT 2 times" in version.state_reason


def test_a_slow_tenant_does_not_slow_another(redis_url: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker; tenant `slow` calls its 0.6 s model in a loop from two threads; tenant
    `fast` calls the shared cnn meanwhile: its p99 stays under one second."""
    monkeypatch.delenv("MAAS_API_KEY", raising=False)
    admin_key = ensure_key_file(tmp_path / "admin.key")
    with running_gateway(redis_url, tmp_path, auth="on",
                         admin_key_file=str(tmp_path / "admin.key")) as port, \
            running_worker(redis_url, tmp_path):
        target = f"127.0.0.1:{port}"
        register_demo_models(target, api_key=admin_key)
        with maas.Client(target, api_key=admin_key) as admin:
            slow_key = admin.create_key("slow", ["infer", "train"]).api_key
            fast_key = admin.create_key("fast", ["infer"]).api_key
        with maas.Client(target, api_key=slow_key) as slow:
            slow.upload_model("crawl", scripted(Spins(8_000_000)), *SPECS)
            slow.infer("crawl", {"x": X})  # its runner is up
        stop = threading.Event()
        slow_calls: list[float] = []

        def crawl() -> None:
            with maas.Client(target, api_key=slow_key) as client:
                while not stop.is_set():
                    began = time.monotonic()
                    client.infer("crawl", {"x": X})
                    slow_calls.append(time.monotonic() - began)

        image = {"input": np.random.default_rng(0).random((1, 1, 28, 28), np.float32)}
        threads = [threading.Thread(target=crawl) for _ in range(2)]
        for t in threads:
            t.start()
        latencies = []
        try:
            with maas.Client(target, api_key=fast_key) as fast:
                fast.infer("cnn", image)
                for _ in range(60):
                    began = time.monotonic()
                    fast.infer("cnn", image)
                    latencies.append(time.monotonic() - began)
                    time.sleep(0.02)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        p99 = sorted(latencies)[int(0.99 * len(latencies)) - 1]
        print(f"\nneighbour: cnn p50 {statistics.median(latencies) * 1e3:.1f} ms, "
              f"p99 {p99 * 1e3:.1f} ms over {len(latencies)} calls while the slow model "
              f"answered {len(slow_calls)} calls (median "
              f"{statistics.median(slow_calls) * 1e3:.0f} ms)")
        assert len(slow_calls) >= 3  # the slow tenant was really computing meanwhile
        assert p99 < 1.0
