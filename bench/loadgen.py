"""An asyncio load generator speaking KServe v2 ModelInfer with raw contents.

Closed loop: `concurrency` callers, each sending its next request when the last returns.
Open loop: requests start at a fixed arrival rate, however long each one takes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import numpy as np

from maas.client import channel_options
from maas.inference import grpc_service_pb2 as v2
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub


@dataclass
class Result:
    target: str
    model: str
    mode: str
    concurrency: int
    rate_per_s: float
    duration_s: float
    requests: int
    errors: int
    req_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_batch_size: float
    max_abs_diff: float
    latencies_ms: list[float]
    # What a request cost the server's processes (bench.costs.Costs.summary), when measured.
    costs: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        doc = asdict(self)
        doc.pop("latencies_ms")
        return doc


Check = Callable[[v2.ModelInferResponse], float]


def request_for(model: str, x: np.ndarray) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return request


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.batch_sizes: list[int] = []
        self.max_diff = 0.0
        self.checked = 0


async def _one(stub: GRPCInferenceServiceStub, request: v2.ModelInferRequest, tally: _Tally,
               check: Check | None, measuring: bool) -> None:
    started = time.perf_counter()
    try:
        response = await stub.ModelInfer(request, timeout=30)
    except grpc.RpcError:
        if measuring:
            tally.errors += 1
        return
    if not measuring:
        return
    tally.latencies.append((time.perf_counter() - started) * 1000)
    if "maas_batch_size" in response.parameters:
        tally.batch_sizes.append(response.parameters["maas_batch_size"].int64_param)
    if check is not None and tally.checked < 200:
        tally.checked += 1
        tally.max_diff = max(tally.max_diff, check(response))


async def run_closed(target: str, model: str, request: v2.ModelInferRequest, concurrency: int,
                     duration_s: float, warmup_s: float = 1.0,
                     check: Check | None = None) -> Result:
    tally = _Tally()
    async with grpc.aio.insecure_channel(target, options=channel_options(64 << 20)) as channel:
        stub = GRPCInferenceServiceStub(channel)
        start = time.perf_counter()
        measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s

        async def caller() -> None:
            while (now := time.perf_counter()) < stop_at:
                await _one(stub, request, tally, check, now >= measure_from)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return _result(target, model, "closed", concurrency, 0.0, duration_s, tally)


async def run_open(target: str, model: str, request: v2.ModelInferRequest, rate_per_s: float,
                   duration_s: float, check: Check | None = None) -> Result:
    tally = _Tally()
    async with grpc.aio.insecure_channel(target, options=channel_options(64 << 20)) as channel:
        stub = GRPCInferenceServiceStub(channel)
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        for i in range(int(rate_per_s * duration_s)):
            delay = start + i / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(_one(stub, request, tally, check, True))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return _result(target, model, "open", 0, rate_per_s, duration_s, tally)


def _result(target: str, model: str, mode: str, concurrency: int, rate: float,
            duration_s: float, tally: _Tally) -> Result:
    lat = np.array(tally.latencies) if tally.latencies else np.array([float("nan")])
    return Result(
        target=target, model=model, mode=mode, concurrency=concurrency, rate_per_s=rate,
        duration_s=duration_s, requests=len(tally.latencies), errors=tally.errors,
        req_per_s=len(tally.latencies) / duration_s,
        p50_ms=float(np.percentile(lat, 50)), p90_ms=float(np.percentile(lat, 90)),
        p99_ms=float(np.percentile(lat, 99)),
        mean_batch_size=float(np.mean(tally.batch_sizes)) if tally.batch_sizes else 0.0,
        max_abs_diff=tally.max_diff, latencies_ms=[float(v) for v in tally.latencies])


def main() -> None:
    """`python -m bench.loadgen`: one closed loop in its own process (bench.scaling runs one
    per load-generator core); prints its Result, latencies included, as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--target", required=True)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--shape", default="1,1,28,28", help="the input's shape")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not measured")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured")
    parser.add_argument("--start-at", type=float, default=0.0,
                        help="wall-clock time (time.time()) to start at, so that several "
                             "load generators measure the same window")
    args = parser.parse_args()
    x = np.random.default_rng(0).random([int(d) for d in args.shape.split(",")],
                                        dtype=np.float32)
    request = request_for(args.model, x)
    time.sleep(max(0.0, args.start_at - time.time()))
    cpu_s, wall_s = time.process_time(), time.perf_counter()
    result = asyncio.run(run_closed(args.target, args.model, request, args.concurrency,
                                    args.duration, args.warmup))
    busy = (time.process_time() - cpu_s) / (time.perf_counter() - wall_s)
    print(json.dumps({**asdict(result), "busy": busy}), flush=True)


if __name__ == "__main__":
    main()
