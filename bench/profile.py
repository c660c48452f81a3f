"""Where a request's CPU goes: per-process CPU per request and Redis commands per request.

`python -m bench.profile [--model cnn] [--concurrency 64] [--seconds 5] [MAAS_X=Y ...]`
runs the pinned cluster of bench.serving, a closed loop, and reads /proc/<pid>/stat of each
process and Redis's INFO commandstats before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import redis

from bench.loadgen import request_for, run_closed
from bench.serving import CLIENT_CORE, INPUTS, pinned
from maas.cli.up import (
    LocalCluster,
    free_port,
    register_demo_models,
    start_redis,
    wait_models_ready,
    wait_ready,
)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("env", nargs="*", help="MAAS_X=Y settings for the cluster")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {CLIENT_CORE})
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(dict(os.environ), Path(tmp))
        try:
            url = start_redis(cluster, argv_prefix=pinned([]))
            port = free_port()
            cluster.env.update(MAAS_REDIS_URL=url, MAAS_DATA_DIR=tmp, MAAS_LOG_LEVEL="WARNING",
                               MAAS_GATEWAY_PORT=str(port),
                               **dict(e.split("=", 1) for e in args.env))
            for name in ("scheduler", "gateway", "worker"):
                cluster.add(name, pinned([sys.executable, "-m", name]))
            target = f"127.0.0.1:{port}"
            wait_ready(target, cluster)
            register_demo_models(target)
            wait_models_ready(target, [args.model], cluster)
            request = request_for(args.model, np.random.rand(*INPUTS[args.model]).astype(
                np.float32))
            asyncio.run(run_closed(target, args.model, request, args.concurrency, 2))
            stats = redis.Redis.from_url(url)
            stats.config_resetstat()
            before = {s.name: cpu_s(s.proc.pid) for s in cluster.services if s.proc}
            result = asyncio.run(run_closed(target, args.model, request, args.concurrency,
                                            args.seconds, warmup_s=0))
            after = {s.name: cpu_s(s.proc.pid) for s in cluster.services if s.proc}
            n = result.requests
            print(f"{result.req_per_s:.0f} req/s, mean batch {result.mean_batch_size:.1f}")
            for name in before:
                print(f"  {name:10} {1e6 * (after[name] - before[name]) / n:6.0f} µs CPU/request")
            top = sorted(stats.info("commandstats").items(), key=lambda kv: -kv[1]["calls"])
            for command, row in top[:14]:
                print(f"  {command.removeprefix('cmdstat_'):18} {row['calls'] / n:6.3f} "
                      f"calls/request {row['usec_per_call']:6.1f} µs/call")
            stats.close()
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
