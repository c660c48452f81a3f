"""The gateway's memory while a large model is registered through the streamed, resumable
upload (CreateModelUpload + UploadModel, as the SDK and the CLI send every large model), into
each artifact store: the local directory and S3-compatible object storage (moto's server, the
one the tests start). The bound the design promises: RSS grows by less than 64 MiB while a
2 GB model uploads.

    python -m bench.upload_memory --mb 2048 [--backends local,s3]

Per backend: its own redis-server and gateway (no worker: registering needs none), a 16 MiB
warm-up upload (first-use imports, clients and thread pools are not the model's), then the
model: an mlp safetensors file of about `--mb` MB written a block at a time. Measured on the
gateway process: VmRSS before; its peak while the upload runs (VmHWM, reset through
/proc/PID/clear_refs first, and VmRSS sampled every 20 ms); VmRSS after. Growth = peak -
before. Writes bench/results/<stamp>-upload-memory.json. Needs about 5x `--mb` of free disk
under $TMPDIR with s3 (the file, the gateway's scratch and cache, the server's parts and
objects), all removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

import maas
from maas.cli.cluster import LocalCluster
from maas.cli.local_redis import start_redis
from maas.cli.ports import free_port
from maas.cli.readiness import wait_ready

BOUND_MIB = 64
WARM_UP_MB = 16
SAMPLE_S = 0.02
BUCKET = "maas-bench"
_BLOCK = os.urandom(1 << 20)


def status_kib(pid: int, field: str) -> int:
    """A `/proc/PID/status` memory field (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


@dataclass
class PeakRss:
    """A process's RSS around a block: before, the peak during it, after (MiB)."""

    before_mib: float = 0.0
    peak_mib: float = 0.0
    after_mib: float = 0.0

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.before_mib


@contextlib.contextmanager
def peak_rss(pid: int) -> Iterator[PeakRss]:
    """Measures `pid`'s RSS growth during the block: its high-water mark is reset first
    (clear_refs 5), and RSS sampled meanwhile, so an earlier peak does not hide this one."""
    found = PeakRss(before_mib=status_kib(pid, "VmRSS") / 1024)
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    peak_kib, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_S):
            peak_kib[0] = max(peak_kib[0], status_kib(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        done.set()
        sampler.join()
        found.peak_mib = max(peak_kib[0], status_kib(pid, "VmHWM")) / 1024
        found.after_mib = status_kib(pid, "VmRSS") / 1024


def write_mlp_weights(path: Path, mb: int) -> dict[str, Any]:
    """An mlp safetensors file of about `mb` MB (random bytes), written a block at a time:
    never whole in memory. Its config."""
    width = max(16, int((mb * 2**20 / 4) ** 0.5))
    config = {"in_features": 64, "hidden": [width, width], "num_classes": 10}
    shapes = {"layers.0.weight": [width, 64], "layers.0.bias": [width],
              "layers.2.weight": [width, width], "layers.2.bias": [width],
              "layers.4.weight": [10, width], "layers.4.bias": [10]}
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * shape[0] * (shape[1] if len(shape) > 1 else 1)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for _ in range(offset // len(_BLOCK)):
            f.write(_BLOCK)
        f.write(_BLOCK[:offset % len(_BLOCK)])
    return config


@contextlib.contextmanager
def gateway(tmp: Path, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """A redis-server and one gateway on `tmp`: the target and the gateway's pid."""
    cluster = LocalCluster(dict(os.environ), tmp)
    port = free_port()
    try:
        cluster.env.update(MAAS_REDIS_URL=start_redis(cluster), MAAS_DATA_DIR=str(tmp),
                           MAAS_GATEWAY_PORT=str(port), MAAS_LOG_LEVEL="WARNING", **env)
        proc = cluster.add("gateway", [sys.executable, "-m", "gateway"]).proc
        assert proc is not None
        wait_ready(f"127.0.0.1:{port}", cluster)
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        cluster.stop()


@contextlib.contextmanager
def backend_env(backend: str, tmp: Path) -> Iterator[dict[str, str]]:
    """The gateway's variables for an artifact store: none for the directory; for s3 a
    moto server with a bucket, stopped at the end."""
    if backend == "local":
        yield {}
        return
    from tests.s3_server import start_s3_server

    server = start_s3_server(tmp)
    try:
        boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                     aws_access_key_id="k", aws_secret_access_key="s"
                     ).create_bucket(Bucket=BUCKET)
        yield {**server.env, "MAAS_ARTIFACT_URL": f"s3://{BUCKET}/bench"}
    finally:
        server.stop()


def measure(backend: str, weights: Path, config: dict[str, Any], warm_up: Path,
            warm_config: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, backend_env(backend, Path(tmp)) as env, \
            gateway(Path(tmp) / "data", env) as (target, pid), \
            maas.Client(target, timeout_s=600) as client:
        client.register_model("warm-up", "mlp", warm_up, warm_config)
        with peak_rss(pid) as rss:
            started = time.perf_counter()
            version = client.register_model("big", "mlp", weights, config)
            upload_s = time.perf_counter() - started
    size = weights.stat().st_size
    return {"backend": backend, "model_bytes": size, "sha256": version.weights_sha256,
            "upload_s": round(upload_s, 2), "mb_per_s": round(size / 1e6 / upload_s, 1),
            "gateway_rss_before_mib": round(rss.before_mib, 1),
            "gateway_rss_peak_mib": round(rss.peak_mib, 1),
            "gateway_rss_after_mib": round(rss.after_mib, 1),
            "gateway_rss_growth_mib": round(rss.growth_mib, 1),
            "within_bound": rss.growth_mib < BOUND_MIB}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upload_memory")
    parser.add_argument("--mb", type=int, default=2048, help="model size, about (MB)")
    parser.add_argument("--backends", default="local,s3")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        weights, warm_up = Path(tmp) / "big.safetensors", Path(tmp) / "warm.safetensors"
        config = write_mlp_weights(weights, args.mb)
        warm_config = write_mlp_weights(warm_up, WARM_UP_MB)
        for backend in args.backends.split(","):
            results.append(measure(backend, weights, config, warm_up, warm_config))
            r = results[-1]
            print(f"{backend}: {r['model_bytes'] / 2**20:,.0f} MiB in {r['upload_s']} s "
                  f"({r['mb_per_s']} MB/s); gateway RSS {r['gateway_rss_before_mib']} -> "
                  f"peak {r['gateway_rss_peak_mib']} MiB: grew "
                  f"{r['gateway_rss_growth_mib']} MiB (bound {BOUND_MIB})", flush=True)
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}-upload-memory.json").write_text(json.dumps({
        "when": stamp, "cpu_count": os.cpu_count(), "mb": args.mb,
        "warm_up_mb": WARM_UP_MB, "bound_mib": BOUND_MIB, "results": results}, indent=2))
    print(f"wrote {out}/{stamp}-upload-memory.json")


if __name__ == "__main__":
    main()
