"""`python -m bench.scaling --cores 1,2,4,8`: does maas use K cores K times as well as one?

For each K, a fresh cluster — redis-server, the scheduler, `--gateways-per-core` times K gateways
on one port (as `maas up --gateways`) and `--workers-per-core` times K workers, at least one of
each — runs pinned to K cores, and closed-loop load generators (`python -m bench.loadgen`,
one process per core, on up to K of the other cores) keep `--concurrency-per-core` times K
batch-1 v2 ModelInfer calls in flight. It prints, from one run, each K's req/s against K times
the one-core figure (K = 1 is always measured first), where the CPU went by kind of process,
how busy the cluster's cores and the load generators were, and writes it all to
bench/results/<stamp>-scaling[-TAG].json. A host needs K + 1 usable cores for K.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.costs import Costs, Meter
from bench.loadgen import Result
from bench.serving import INPUTS, WARMUP_S, pinned, start_maas
from maas.cli.up import LocalCluster

STARTUP_S = 3.0  # load generators import grpc and numpy before the common start time


@dataclass
class Plan:
    """What one K runs on: the cluster's cores, the load generators' cores, the processes."""

    cores: list[int]
    loadgen_cores: list[int]
    gateways: int
    workers: int
    concurrency: int


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def plans(ks: list[int], available: list[int], args: argparse.Namespace) -> dict[int, Plan]:
    """A Plan per K (1 first), or SystemExit when the host has too few cores."""
    ks = sorted({1, *ks})
    if ks[0] < 1:
        raise SystemExit("bench.scaling: --cores must be at least 1")
    if ks[-1] + 1 > len(available):
        raise SystemExit(
            f"bench.scaling: --cores {ks[-1]} needs {ks[-1] + 1} cores ({ks[-1]} for the "
            f"cluster, at least 1 for the load generator); this host lets this process use "
            f"{len(available)} ({','.join(map(str, available))}). Ask for at most "
            f"--cores {len(available) - 1}.")
    out = {}
    for k in ks:
        rest = available[k:]
        out[k] = Plan(cores=available[:k], loadgen_cores=rest[:min(len(rest), k)],
                      gateways=max(1, round(k * args.gateways_per_core)),
                      workers=max(1, round(k * args.workers_per_core)),
                      concurrency=args.concurrency_per_core * k)
    return out


def split(total: int, parts: int) -> list[int]:
    """`total` callers over `parts` load generators, as evenly as can be (each >= 1)."""
    return [max(1, total // parts + (i < total % parts)) for i in range(parts)]


def load(target: str, model: str, plan: Plan, duration_s: float,
         meter: Meter) -> tuple[Result, Costs, list[float]]:
    """One closed loop from every load generator at once; the Meter reads the measured
    window only. Returns the merged Result, its Costs and each generator's busy share."""
    start_at = time.time() + STARTUP_S
    shape = ",".join(map(str, INPUTS[model]))
    procs = [subprocess.Popen(
        pinned([sys.executable, "-m", "bench.loadgen", "--target", target, "--model", model,
                "--shape", shape, "--concurrency", str(c), "--warmup", str(WARMUP_S),
                "--duration", str(duration_s), "--start-at", str(start_at)], [core]),
        stdout=subprocess.PIPE, text=True)
        for core, c in zip(plan.loadgen_cores, split(plan.concurrency, len(plan.loadgen_cores)),
                           strict=True)]
    time.sleep(max(0.0, start_at + WARMUP_S - time.time()))
    before = meter.snapshot()
    time.sleep(max(0.0, start_at + WARMUP_S + duration_s - time.time()))
    after = meter.snapshot()
    docs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60 + duration_s)
        if proc.returncode != 0:
            raise SystemExit(f"bench.scaling: a load generator failed ({proc.returncode})")
        docs.append(json.loads(out.splitlines()[-1]))
    result = merge(target, model, plan.concurrency, duration_s, docs)
    return result, meter.costs(before, after, result.requests), [d["busy"] for d in docs]


def merge(target: str, model: str, concurrency: int, duration_s: float,
          docs: list[dict[str, Any]]) -> Result:
    """One Result of several load generators' (their latencies pooled)."""
    latencies = [v for d in docs for v in d["latencies_ms"]]
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    requests = sum(d["requests"] for d in docs)
    batch = sum(d["mean_batch_size"] * d["requests"] for d in docs) / max(requests, 1)
    return Result(target=target, model=model, mode="closed", concurrency=concurrency,
                  rate_per_s=0.0, duration_s=duration_s, requests=requests,
                  errors=sum(d["errors"] for d in docs), req_per_s=requests / duration_s,
                  p50_ms=float(np.percentile(lat, 50)), p90_ms=float(np.percentile(lat, 90)),
                  p99_ms=float(np.percentile(lat, 99)), mean_batch_size=batch,
                  max_abs_diff=0.0, latencies_ms=latencies)


def by_kind(cpu_us: dict[str, float]) -> dict[str, float]:
    """CPU µs per request summed over the processes of each kind (gateway-1 + gateway-2...)."""
    out: dict[str, float] = {}
    for name, us in cpu_us.items():
        kind = name.split("-")[0]
        out[kind] = out.get(kind, 0.0) + us
    return out


def measure(k: int, plan: Plan, args: argparse.Namespace,
            env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(dict(os.environ), Path(tmp))
        try:
            target, meter = start_maas(cluster, [args.model], env, args.appendfsync,
                                       gateways=plan.gateways, workers=plan.workers,
                                       cores=plan.cores)
            try:
                result, costs, busy = load(target, args.model, plan, args.duration, meter)
            finally:
                meter.close()
        finally:
            cluster.stop()
    used = costs.total_cpu_us * result.requests / 1e6 / args.duration
    return {"cores": k, "cluster_cores": plan.cores, "loadgen_cores": plan.loadgen_cores,
            "gateways": plan.gateways, "workers": plan.workers, **result.summary(),
            "cpu_us_by_kind": by_kind(costs.cpu_us), "costs": costs.summary(),
            "cluster_cores_busy": used / k, "loadgen_busy": busy}


def report(point: dict[str, Any], one_core: float) -> None:
    k = point["cores"]
    point["vs_k_times_one_core"] = point["req_per_s"] / (k * one_core) if one_core else 0.0
    cpu = "  ".join(f"{kind} {us:,.0f}" for kind, us in point["cpu_us_by_kind"].items())
    saturated = " (load generator saturated)" if max(point["loadgen_busy"]) > 0.9 else ""
    print(f"  K={k:<2} {point['gateways']} gw {point['workers']} wk c={point['concurrency']:<4}"
          f" {point['req_per_s']:8.0f} req/s = {point['vs_k_times_one_core']:.2f} x K x one "
          f"core  p50 {point['p50_ms']:6.2f} ms  p99 {point['p99_ms']:6.2f} ms  errors "
          f"{point['errors']}  batch {point['mean_batch_size']:.1f}", flush=True)
    print(f"       CPU µs/request: {cpu}; cluster cores busy {point['cluster_cores_busy']:.0%},"
          f" load generators busy " + ", ".join(f"{b:.0%}" for b in point["loadgen_busy"])
          + saturated, flush=True)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="1,2,4,8", help="K values; 1 is always added")
    parser.add_argument("--model", default="cnn", choices=sorted(INPUTS))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per K")
    parser.add_argument("--concurrency-per-core", type=int, default=64)
    parser.add_argument("--gateways-per-core", type=float, default=0.5)
    parser.add_argument("--workers-per-core", type=float, default=0.5)
    parser.add_argument("--device", default=None,
                        help="the workers' MAAS_WORKER_DEVICE (cpu, cuda, cuda:0; default: "
                             "the environment's, else auto)")
    parser.add_argument("--appendfsync", default="always", choices=["always", "everysec"])
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--tag", default="", help="added to the JSON file's name")
    parser.add_argument("env", nargs="*", help="MAAS_X=Y settings for the cluster")
    return parser.parse_args()


def main() -> None:
    args = parse()
    available = usable_cores()
    todo = plans([int(k) for k in args.cores.split(",")], available, args)
    env = dict(e.split("=", 1) for e in args.env)
    if args.device:
        env["MAAS_WORKER_DEVICE"] = args.device
    os.sched_setaffinity(0, set(available[max(todo):]))  # this process stays off the cluster's
    print(f"maas on K cores ({args.model}, {args.duration:g} s per K, "
          f"{args.concurrency_per_core} callers per core, {env or 'default settings'}):",
          flush=True)
    points = []
    for k, plan in todo.items():
        points.append(measure(k, plan, args, env))
        report(points[-1], points[0]["req_per_s"])
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stamp}-scaling{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps({
        "when": stamp, "usable_cores": available, "model": args.model, "settings": env,
        "args": {f: v for f, v in vars(args).items() if f != "env"},
        "ratios": {str(p["cores"]): p["vs_k_times_one_core"] for p in points},
        "points": points}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
