"""Where a request's CPU goes: per-process CPU, Redis commands and AOF bytes per request.

`python -m bench.profile [--model cnn] [--concurrency 1,64] [--seconds 5] [--idle 10]
[--appendfsync always] [MAAS_X=Y ...]` runs the pinned cluster of bench.serving; with
--idle, first reads each process's CPU twice over that many seconds while nothing is asked
of it (an idle cluster must use < 2 % of a core); then, per concurrency, a closed loop with
its costs (bench.costs) and the Redis commands it ran, most frequent first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

from bench.costs import Costs, Meter
from bench.loadgen import request_for, run_closed
from bench.serving import CLIENT_CORE, INPUTS, WARMUP_S, start_maas
from maas.cli.up import LocalCluster


def print_idle(meter: Meter, seconds: float) -> None:
    for window in (1, 2):
        usage = meter.idle_percent(seconds)
        print(f"idle {window} ({seconds:g} s): " + "  ".join(
            f"{name} {pct:.2f}%" for name, pct in usage.items())
            + f"  total {sum(usage.values()):.2f}% of a core", flush=True)


def print_commands(costs: Costs, stats: dict[str, dict[str, float]]) -> None:
    for command, per_request in sorted(costs.commands.items(), key=lambda kv: -kv[1])[:14]:
        usec = stats.get(f"cmdstat_{command}", {}).get("usec_per_call", 0.0)
        print(f"      {command:18} {per_request:6.3f} calls/request {usec:6.1f} µs/call")


async def measure(target: str, model: str, concurrency: int, seconds: float,
                  meter: Meter, redis_url: str) -> None:
    request = request_for(model, np.random.rand(*INPUTS[model]).astype(np.float32))
    await run_closed(target, model, request, concurrency, WARMUP_S, warmup_s=0)
    stats = redis.Redis.from_url(redis_url)
    stats.config_resetstat()  # for usec_per_call of this run only
    before = meter.snapshot()
    result = await run_closed(target, model, request, concurrency, seconds, warmup_s=0)
    costs = meter.costs(before, meter.snapshot(), result.requests)
    print(f"{model} c={concurrency}: {result.req_per_s:.0f} req/s, p50 {result.p50_ms:.2f} ms, "
          f"mean batch {result.mean_batch_size:.1f}", flush=True)
    print("\n".join(costs.lines()))
    print_commands(costs, stats.info("commandstats"))
    stats.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--concurrency", default="64", help="e.g. 1,16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--idle", type=float, default=0.0,
                        help="first measure the idle cluster twice over this many seconds")
    parser.add_argument("--appendfsync", default="always", choices=["always", "everysec"])
    parser.add_argument("env", nargs="*", help="MAAS_X=Y settings for the cluster")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {CLIENT_CORE})
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(dict(os.environ), Path(tmp))
        try:
            target, meter = start_maas(cluster, [args.model],
                                       dict(e.split("=", 1) for e in args.env),
                                       args.appendfsync)
            redis_url = cluster.env["MAAS_REDIS_URL"]
            if args.idle:
                time.sleep(3)  # the worker preloads the models just registered
                print_idle(meter, args.idle)
            for c in (int(c) for c in args.concurrency.split(",")):
                asyncio.run(measure(target, args.model, c, args.seconds, meter, redis_url))
            meter.close()
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
