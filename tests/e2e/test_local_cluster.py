"""`maas up` as a user runs it: ready line, CLI commands, worker restart, clean stop, and
several gateways on one port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from maas.cli.up import free_port
from maas.inference import grpc_service_pb2 as v2
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from scheduler.keys import reply_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

MAAS = [sys.executable, "-m", "maas.cli.main"]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Output:
    """Collects a process's stdout lines on a thread, so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                self.lines.append(line)

    def join(self) -> None:
        self._thread.join(10)

    def wait_for(self, text: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen; output:\n{''.join(self.lines[-40:])}")


def zeros_for_cnn() -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="cnn")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 28, 28])
    request.raw_input_contents.append(np.zeros((1, 1, 28, 28), np.float32).tobytes())
    return request


def stop_cleanly(proc: subprocess.Popen[str], out: Output) -> None:
    """SIGTERM to `maas up`: it must stop every process it started and exit 0."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    out.join()


def assert_stopped_cleanly(proc: subprocess.Popen[str], kids: list[int]) -> None:
    assert proc.returncode == 0
    assert all(not Path(f"/proc/{p}").exists() for p in kids), "orphan processes left"


def cli(target: str, *args: str) -> dict:
    done = subprocess.run([*MAAS, *args, "--target", target, "--json"], capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def test_maas_up_serves_restarts_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([*MAAS, "up", "--port", str(port), "--workers", "2",
                             "--data-dir", str(tmp_path / "data")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = Output(proc)
    try:
        assert out.wait_for("maas ready:", 120).strip() == f"maas ready: gateway 127.0.0.1:{port}"
        console = out.wait_for("maas console: http://127.0.0.1:", 5).split()[-1]
        with urllib.request.urlopen(f"{console}models", timeout=10) as page:
            assert b"cnn" in page.read()  # the web console, a client of the gateway
        out.wait_for("demo: cnn", 60)
        target = f"127.0.0.1:{port}"
        result = cli(target, "infer", "cnn", "--input", "input=random")
        assert result["outputs"]["output"]["shape"] == [1, 10]
        model = cli(target, "models", "get", "cnn")
        assert len(model["versions"][0]["weights_sha256"]) == 64
        # redis, scheduler, gateway, two workers and the console, each its own process.
        kids = children_of(proc.pid)
        assert len(kids) == 6
        worker_pid = next(p for p in kids
                          if b"worker-1" in Path(f"/proc/{p}/cmdline").read_bytes())
        os.kill(worker_pid, signal.SIGKILL)
        out.wait_for("worker-1 exited with -9; restarting", 30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(children_of(proc.pid)) < 6:
            time.sleep(0.2)
        assert len(children_of(proc.pid)) == 6
        assert cli(target, "infer", "mlp")["outputs"]["output"]["shape"] == [1, 10]
        kids = children_of(proc.pid)
    finally:
        stop_cleanly(proc, out)
    assert_stopped_cleanly(proc, kids)


def served_by(metrics_port: int) -> float:
    """ModelInfer calls a gateway answered, read from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == "maas_inference_request_success_total")


def reply_streams(out: Output, data_dir: Path) -> list[bytes]:
    """The reply streams in the Redis `maas up` started (its URL printed masked)."""
    url = out.wait_for("[maas] redis redis://", 1).split()[2]
    password = (data_dir / "redis.password").read_text().strip()
    client = redis.Redis.from_url(url.replace("****", password))
    try:
        return list(client.scan_iter(match=reply_stream("*", "*")))
    finally:
        client.close()


def test_maas_up_runs_several_gateways_on_one_port(tmp_path: Path) -> None:
    port, base = free_port(), free_port()
    proc = subprocess.Popen([*MAAS, "up", "--port", str(port), "--gateways", "2",
                             "--workers", "1", "--no-demo", "--metrics-port", str(base),
                             "--data-dir", str(tmp_path / "data")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = Output(proc)
    try:
        ready = out.wait_for("maas ready:", 60).strip()
        assert ready == f"maas ready: gateway 127.0.0.1:{port} (2 processes)"
        ports = out.wait_for("[maas] /metrics ports:", 1)
        assert f"gateway-1 {base + 1}, gateway-2 {base + 2}, worker-1 {base + 3}" in ports
        kids = children_of(proc.pid)
        assert len(kids) == 6  # redis, scheduler, two gateways, a worker, the console
        request = zeros_for_cnn()
        for _ in range(24):  # a connection each: the kernel spreads them over the gateways
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
            assert list(reply.outputs[0].shape) == [1, 10]
        answered = [served_by(base + 1), served_by(base + 2)]
        assert sum(answered) == 24 and min(answered) > 0, answered
        # Each gateway has its own reply stream, and both were written to.
        assert len(reply_streams(out, tmp_path / "data")) == 2
    finally:
        stop_cleanly(proc, out)
    assert_stopped_cleanly(proc, kids)


def test_maas_up_on_a_local_redis_cluster_serves_and_keeps_its_data(tmp_path: Path) -> None:
    """`maas up --redis-cluster`: six redis-server nodes (3 primaries + 3 replicas) under the
    supervisor, maas on them through a redis+cluster:// URL; a second start on the same data
    dir finds the same cluster and its models."""
    port = free_port()
    argv = [*MAAS, "up", "--port", str(port), "--workers", "1", "--no-demo",
            "--redis-cluster", "--data-dir", str(tmp_path / "data")]
    for start in range(2):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out = Output(proc)
        try:
            url = out.wait_for("[maas] redis ", 60)
            assert "redis+cluster://:****@127.0.0.1:" in url and url.count(",") == 5
            out.wait_for("maas ready:", 120)
            kids = children_of(proc.pid)
            assert len(kids) == 10  # six Redis nodes, scheduler, gateway, a worker, console
            if start == 1:
                assert out.lines.count("[maas] registered demo model cnn v1\n") == 0
            models = {m["name"] for m in cli(f"127.0.0.1:{port}", "models", "list")["models"]}
            assert {"cnn", "mlp"} <= models
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = GRPCInferenceServiceStub(channel).ModelInfer(zeros_for_cnn(), timeout=30)
            assert list(reply.outputs[0].shape) == [1, 10]
        finally:
            stop_cleanly(proc, out)
        assert_stopped_cleanly(proc, kids)
