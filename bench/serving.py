"""`make bench`: maas against its baselines, all measured in this run.

Baselines: in-process torch (the compute limit) and a bare grpc.aio v2 echo server (the gRPC
floor). Server-side processes (echo, or redis + scheduler + gateway + worker) are pinned to
core 0 together, like a peer server would be; this load generator runs on core 1.

Under each point: what a request cost each process (CPU µs), Redis (commands, AOF bytes),
jobs per forward and leases lost (bench.costs), with CPU against the floor's at that
concurrency. `--duration 2` is a quick check (numbers move 10-30% between runs).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import redis

from bench.costs import Meter
from bench.loadgen import Result, request_for, run_closed
from bench.plots import plot_results
from maas.cli.local_redis_cluster import start_redis_cluster
from maas.cli.up import (
    LocalCluster,
    free_port,
    register_demo_models,
    start_redis,
    wait_listening,
    wait_models_ready,
    wait_ready,
)
from maas.client import infer_outputs
from scheduler.connection import cluster_nodes

SERVER_CORE, CLIENT_CORE = 0, 1
INPUTS = {"mlp": (1, 64), "cnn": (1, 1, 28, 28)}
WARMUP_S = 1.0


def pinned(argv: list[str], cores: Collection[int] = (SERVER_CORE,)) -> list[str]:
    """`argv` run on `cores` only (taskset; as is on a one-core host)."""
    if (os.cpu_count() or 1) == 1:
        return argv
    return ["taskset", "-c", ",".join(str(c) for c in sorted(cores)), *argv]


def in_process(model_name: str, duration_s: float) -> dict[str, float]:
    """Samples/s of the model run in this process, one thread, per batch size."""
    import torch

    from tests.models import reference_model

    torch.set_num_threads(1)
    model = reference_model(model_name)
    out: dict[str, float] = {}
    for batch in (1, 8, 32, 64):
        x = torch.rand(batch, *INPUTS[model_name][1:])
        with torch.inference_mode():
            model(x)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < duration_s / 4:
                model(x)
                n += batch
        out[str(batch)] = n / (time.perf_counter() - start)
    return out


def _checker(model_name: str, x: np.ndarray) -> Any:
    from tests.models import reference_model, run_reference

    expected = run_reference(reference_model(model_name), x)
    return lambda response: float(np.abs(infer_outputs(response)["output"] - expected).max())


async def _sweep(target: str, label: str, models: list[str], concurrencies: list[int],
                 duration_s: float, check: bool, meter: Meter,
                 floor_cpu_us: dict[int, float] | None = None) -> list[Result]:
    """A closed loop per model and concurrency: a warm-up, then a measured run read by
    `meter` before and after."""
    results = []
    for model in models:
        x = np.random.default_rng(0).random(INPUTS[model], dtype=np.float32)
        checker = _checker(model, x) if check else None
        request = request_for(model, x)
        for c in concurrencies:
            await run_closed(target, model, request, c, WARMUP_S, warmup_s=0)
            before = meter.snapshot()
            r = await run_closed(target, model, request, c, duration_s, warmup_s=0,
                                 check=checker)
            costs = meter.costs(before, meter.snapshot(), r.requests)
            r.target, r.costs = label, costs.summary()
            results.append(r)
            print(f"  {label:5} {model:4} c={c:<3} {r.req_per_s:8.0f} req/s  p50 {r.p50_ms:6.2f} "
                  f"ms  p99 {r.p99_ms:6.2f} ms  errors {r.errors}  batch {r.mean_batch_size:.1f}",
                  flush=True)
            print("\n".join(costs.lines((floor_cpu_us or {}).get(c))), flush=True)
    return results


def bench_echo(concurrencies: list[int], duration_s: float) -> list[Result]:
    port = free_port()
    proc = subprocess.Popen(pinned([sys.executable, "-m", "bench.echo_server", "--port",
                                    str(port)]), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        return asyncio.run(_sweep(f"127.0.0.1:{port}", "echo", ["cnn"], concurrencies,
                                  duration_s, False, Meter({"echo": proc.pid})))
    finally:
        proc.terminate()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _names(kind: str, n: int) -> list[str]:
    return [kind] if n == 1 else [f"{kind}-{i + 1}" for i in range(n)]


def start_maas(cluster: LocalCluster, models: list[str], env: dict[str, str],
               appendfsync: str = "always", *, gateways: int = 1, workers: int = 1,
               cores: Collection[int] = (SERVER_CORE,),
               redis_cluster: bool = False) -> tuple[str, Meter]:
    """Redis, the scheduler, `gateways` gateways (one port, as `maas up --gateways`) and
    `workers` workers, all pinned to `cores`, with the demo models; returns the gateways'
    address and a Meter of every process (named as `maas up` names them). With
    `redis_cluster`, a local Redis Cluster (`maas up --redis-cluster`: 3 primaries + 3
    replicas, pinned to `cores` too) instead of one redis-server; its primaries' commands
    are counted."""
    port = free_port()
    stats_urls: str | list[str]
    if redis_cluster:
        redis_url = start_redis_cluster(cluster, argv_prefix=pinned([], cores),
                                        appendfsync=appendfsync)
        stats_urls = primary_urls(redis_url)
    else:
        redis_url = stats_urls = start_redis(cluster, argv_prefix=pinned([], cores),
                                             appendfsync=appendfsync)
    cluster.env.update(MAAS_REDIS_URL=redis_url, MAAS_DATA_DIR=str(cluster.data_dir),
                       MAAS_GATEWAY_PORT=str(port), MAAS_LOG_LEVEL="WARNING", **env)
    metrics_urls = []
    started = []
    for name in ("scheduler", *_names("gateway", gateways), *_names("worker", workers)):
        module = name.split("-")[0]
        own = {}
        if module != "gateway":  # lost leases (worker), reclaimed ones (scheduler)
            own["MAAS_METRICS_PORT"] = str(free_port())
            metrics_urls.append(f"http://127.0.0.1:{own['MAAS_METRICS_PORT']}/metrics")
        argv = [sys.executable, "-m", module, *(["--id", name] if module == "worker" else [])]
        started.append(cluster.add(name, pinned(argv, cores), own))
    target = f"127.0.0.1:{port}"
    wait_ready(target, cluster)
    wait_listening([s for s in started if s.name.startswith("gateway")], port, cluster)
    register_demo_models(target)
    wait_models_ready(target, models, cluster)
    pids = {s.name: s.proc.pid for s in cluster.services if s.proc is not None}
    return target, Meter(pids, stats_urls, tuple(metrics_urls))


def primary_urls(cluster_url: str) -> list[str]:
    """redis:// URLs of the nodes of a Redis Cluster that are primaries now."""
    nodes, options = cluster_nodes(cluster_url)
    password = str(options.get("password", ""))
    urls = [f"redis://:{quote(password, safe='')}@{host}:{port}" for host, port in nodes]
    primaries = []
    for url in urls:
        with redis.Redis.from_url(url) as node:
            if node.info("replication")["role"] == "master":
                primaries.append(url)
    return primaries


def bench_maas(models: list[str], concurrencies: list[int], duration_s: float,
               env: dict[str, str], appendfsync: str = "always",
               floor_cpu_us: dict[int, float] | None = None,
               redis_cluster: bool = False, label: str = "maas") -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(dict(os.environ), Path(tmp))
        try:
            target, meter = start_maas(cluster, models, env, appendfsync,
                                       redis_cluster=redis_cluster)
            try:
                return asyncio.run(_sweep(target, label, models, concurrencies, duration_s,
                                          True, meter, floor_cpu_us))
            finally:
                meter.close()
        finally:
            cluster.stop()


def ratios(results: list[Result],
           compute: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """maas against the floor (the echo server, measured with cnn's request) per model and
    concurrency, the Redis Cluster runs against one Redis, and, where `compute` (in-process
    samples/s by batch) is given, each point's ceiling (`ceiling`)."""
    by = {(r.target, r.model, r.concurrency): r for r in results}
    out: dict[str, float] = {}
    for c in sorted({r.concurrency for r in results}):
        echo, cnn = by.get(("echo", "cnn", c)), by.get(("maas", "cnn", c))
        for label, name in (("maas-rc", "redis_cluster"), ("maas-rc-wait", "redis_cluster_wait"),
                            ("maas-rc-sharded", "redis_cluster_sharded")):
            on_cluster = by.get((label, "cnn", c))
            if cnn and on_cluster:
                out[f"cnn_c{c}_{name}_vs_one_redis"] = on_cluster.req_per_s / cnn.req_per_s
            if on_cluster and on_cluster.costs:  # what bounds one model: its busiest node
                out[f"cnn_c{c}_{name}_busiest_node_cpu_us"] = busiest_node(on_cluster.costs)
        for model in sorted({r.model for r in results if r.target == "maas"}):
            maas = by.get(("maas", model, c))
            if not (echo and maas):
                continue
            out[f"{model}_c{c}_throughput_vs_echo"] = maas.req_per_s / echo.req_per_s
            out[f"{model}_c{c}_p50_minus_echo_ms"] = maas.p50_ms - echo.p50_ms
            if echo.costs and maas.costs:
                out[f"{model}_c{c}_cpu_per_request_vs_echo"] = (maas.costs["total_cpu_us"]
                                                                / echo.costs["total_cpu_us"])
                if compute and model in compute:
                    out[f"{model}_c{c}_ceiling_vs_echo"] = ceiling(
                        echo.costs["total_cpu_us"],
                        forward_us(compute[model], maas.mean_batch_size),
                        maas.costs["cpu_us"].get("redis", 0.0))
    return out


def forward_us(samples_per_s: dict[str, float], batch: float) -> float:
    """CPU µs of one sample's forward in a batch of `batch` (in-process, one thread),
    interpolated between the batch sizes measured."""
    points = sorted((int(b), 1e6 / v) for b, v in samples_per_s.items())
    for (b0, u0), (b1, u1) in itertools.pairwise(points):
        if batch <= b1:
            return u0 + (u1 - u0) * (max(batch, b0) - b0) / (b1 - b0)
    return points[-1][1]


def ceiling(floor_us: float, forward: float, redis_us: float) -> float:
    """The most a gateway + Redis + worker cluster on one core could reach against the floor
    at a measured point, if the gateway cost no more than the floor's whole request (it does
    what the floor does, and more) and the worker no more than the forward of its batch
    (in-process, measured in the same run), with the Redis CPU per request measured: the
    throughput ratio floor / (floor + forward + Redis). Everything the gateway and the worker
    add for the queue (submit, reply, claim, complete, envelopes) only lowers it."""
    return floor_us / (floor_us + forward + redis_us)


def busiest_node(costs: dict[str, Any]) -> float:
    """The CPU µs per request of the Redis Cluster node that worked most (`redis-N`)."""
    return max((us for name, us in costs["cpu_us"].items() if name.startswith("redis-")),
               default=0.0)


def floor_cpu(results: list[Result]) -> dict[int, float]:
    """The echo server's CPU µs per request, by concurrency."""
    return {r.concurrency: r.costs["total_cpu_us"] for r in results
            if r.target == "echo" and r.costs}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per point")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--appendfsync", default="always", choices=["always", "everysec"],
                        help="Redis durability for the maas run (always: the local default)")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="also run maas on a 3 + 3 Redis Cluster (every node pinned to "
                             "the server core too), printed as maas-rc")
    parser.add_argument("--wait-replicas", type=int, default=0,
                        help="with --redis-cluster: one more cluster run with "
                             "MAAS_REDIS_WAIT_REPLICAS=N, printed as maas-rc-wait")
    parser.add_argument("--model-shards", default="",
                        help="with --redis-cluster: one more cluster run with "
                             "MAAS_MODEL_SHARDS=SPEC (e.g. cnn=3), printed as maas-rc-sharded")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {CLIENT_CORE})
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    models = args.models.split(",")
    print("in-process torch (samples/s by batch size):", flush=True)
    compute = {m: in_process(m, args.duration) for m in models}
    for m, by_batch in compute.items():
        print(f"  {m}: " + "  ".join(f"b{b} {v:,.0f}" for b, v in by_batch.items()))
    print("bare grpc.aio echo server:", flush=True)
    results = bench_echo(concurrencies, args.duration)
    print("maas (redis + scheduler + gateway + 1 worker, pinned to one core):", flush=True)
    results += bench_maas(models, concurrencies, args.duration, {}, args.appendfsync,
                          floor_cpu(results))
    if args.redis_cluster:
        print("maas on a Redis Cluster (3 primaries + 3 replicas, all pinned to that core):",
              flush=True)
        results += bench_maas(models, concurrencies, args.duration, {}, args.appendfsync,
                              floor_cpu(results), redis_cluster=True, label="maas-rc")
        if args.wait_replicas:
            print(f"the same with MAAS_REDIS_WAIT_REPLICAS={args.wait_replicas}:", flush=True)
            results += bench_maas(
                models, concurrencies, args.duration,
                {"MAAS_REDIS_WAIT_REPLICAS": str(args.wait_replicas)}, args.appendfsync,
                floor_cpu(results), redis_cluster=True, label="maas-rc-wait")
        if args.model_shards:
            print(f"the same with MAAS_MODEL_SHARDS={args.model_shards}:", flush=True)
            results += bench_maas(
                models, concurrencies, args.duration, {"MAAS_MODEL_SHARDS": args.model_shards},
                args.appendfsync, floor_cpu(results), redis_cluster=True,
                label="maas-rc-sharded")
    summary = ratios(results, compute)
    print("ratios:", json.dumps(summary, indent=2))
    print("(*_ceiling_vs_echo: the most this design could reach at that point if its gateway "
          "cost only the floor's request and its worker only the forward, with the Redis CPU "
          "measured: floor / (floor + forward + Redis))")
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}.json").write_text(json.dumps({
        "when": stamp, "cpu_count": os.cpu_count(), "appendfsync": args.appendfsync,
        "in_process_samples_per_s": compute,
        "results": [r.summary() for r in results], "ratios": summary}, indent=2))
    plot_results(results, out / f"{stamp}-throughput.png", out / f"{stamp}-latency-cdf.png")
    print(f"wrote {out}/{stamp}.json and plots")


if __name__ == "__main__":
    main()
