"""Generation: tokens/s and time to first token (TTFT) of maas's continuous batching against
the same `gpt` in this process with static batching and with continuous batching (maas's own
engine, no network: bench/generation_baselines.py), at each concurrency, with mixed prompt
(8-64 bytes) and output (max_tokens 8-128) lengths, greedy.

maas: redis + scheduler + gateway + one worker (MAAS_MAX_BATCH_SIZE 32, one torch thread),
pinned to core 0 as bench.serving pins them (`--worker-alone`: the worker alone on core 0,
the rest on core 1); N closed-loop streams through AsyncClient.generate from this process on
core 1. The baselines: the same weights and request mix in this process on core 1, one torch
thread, while the cluster idles. At each concurrency, after a warm-up of each system, the
three systems take turns for `--rounds` rounds of `--duration` seconds each, so a shared,
noisy machine's drift falls on all three; each figure is the median over the rounds.
Tokens/s = tokens received in the window / its length; a stream still running when the
window closes is cancelled (its tokens up to then count); TTFT is from sending a request to
receiving its first token.

    python -m bench.generation --duration 6 --rounds 3 --concurrency 1,8,32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import maas
from bench.costs import Meter
from bench.generation_baselines import Point, request_mix, run_continuous, run_static
from bench.serving import CLIENT_CORE, start_maas
from maas.cli.up import LocalCluster, wait_models_ready
from maas.generation import GenerationChunk

MODEL = "bench-gpt"
# A small but not toy decoder: ~1.0 M parameters. Prompt (<= 65 tokens with BOS) plus
# max_tokens (<= 128) stays inside max_len, so no request is cut short by it.
CONFIG = {"vocab_size": 259, "d_model": 128, "heads": 4, "layers": 4, "ff": 512,
          "max_len": 256}
WARMUP_S = 2.0


def build_model(seed: int) -> Any:
    """The bench's GPT with seeded random weights (eval mode, CPU)."""
    import torch

    from runtime.gpt_nn import GPT

    torch.manual_seed(seed)
    return GPT(**CONFIG).eval()


async def _streams(client: maas.AsyncClient, concurrency: int, duration_s: float,
                   seed: int, system: str) -> Point:
    """N closed-loop streams for `duration_s`; each sends its next request when the last
    ends."""
    point = Point(system, concurrency, duration_s)
    requests = request_mix(seed)
    end = time.perf_counter() + duration_s

    async def stream() -> None:
        while time.perf_counter() < end:
            request = next(requests)
            sent = time.perf_counter()
            chunks = cast(AsyncGenerator[GenerationChunk, None], client.generate(
                MODEL, request.prompt, max_tokens=request.max_tokens, temperature=0.0,
                timeout_s=120))
            async with contextlib.aclosing(chunks):  # leaving early cancels the generation
                async for chunk in chunks:
                    now = time.perf_counter()
                    if now >= end:
                        return
                    if chunk.token_ids and chunk.index == 0:
                        point.ttft_s.append(now - sent)
                    point.tokens += len(chunk.token_ids)
                    if chunk.finish_reason:
                        point.finished(chunk.finish_reason)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(stream())
    return point


SYSTEMS = ("static", "continuous", "maas")


async def _point(system: str, model: Any, client: maas.AsyncClient, meter: Meter,
                 concurrency: int, duration_s: float, seed: int) -> Point:
    """One system's closed loop at `concurrency` for `duration_s` (maas's read by `meter`:
    its costs per token)."""
    if system == "static":
        return run_static(model, concurrency, duration_s, seed)
    if system == "continuous":
        return run_continuous(model, concurrency, duration_s, seed)
    before = meter.snapshot()
    point = await _streams(client, concurrency, duration_s, seed, system)
    point.costs = meter.costs(before, meter.snapshot(), point.tokens).summary()
    await asyncio.sleep(0.5)  # its cancelled streams leave the batch before the next turn
    return point


async def _sweep(model: Any, target: str, meter: Meter, concurrencies: list[int],
                 duration_s: float, rounds: int, seed: int) -> dict[int, dict[str, list[Point]]]:
    """Per concurrency: each system warmed up, then `rounds` turns of the three."""
    out: dict[int, dict[str, list[Point]]] = {}
    async with maas.AsyncClient(target, timeout_s=60) as client:
        await _streams(client, 4, 3 * WARMUP_S, seed + 2, "load")  # the worker loads it
        for c in concurrencies:
            out[c] = {system: [] for system in SYSTEMS}
            for system in SYSTEMS:
                await _point(system, model, client, meter, c, WARMUP_S, seed + 1)
            for _ in range(rounds):
                for system in SYSTEMS:
                    point = await _point(system, model, client, meter, c, duration_s, seed)
                    out[c][system].append(point)
                    _print(point)
    return out


def repin(pid: int, cores: set[int]) -> None:
    """Moves every thread of a running process to `cores` (threads it starts later
    inherit their creator's)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cores)


def bench(concurrencies: list[int], duration_s: float, rounds: int, seed: int,
          is_worker_alone: bool = False) -> dict[int, dict[str, list[Point]]]:
    """The sweep, against a fresh cluster; `is_worker_alone`: the worker keeps core 0 to
    itself, redis, scheduler and gateway move to core 1 (with this load generator)."""
    import torch
    from safetensors.torch import save

    torch.set_num_threads(1)
    model = build_model(seed)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(dict(os.environ), Path(tmp))
        try:
            target, meter = start_maas(cluster, [], {"MAAS_MAX_BATCH_SIZE": "32",
                                                     "MAAS_TORCH_THREADS": "1"})
            if is_worker_alone and (os.cpu_count() or 1) > 1:
                for name, pid in meter.pids.items():
                    if not name.startswith("worker"):
                        repin(pid, {CLIENT_CORE})
            try:
                with maas.Client(target, timeout_s=60) as client:
                    client.register_model(MODEL, "gpt", save(model.state_dict()), CONFIG)
                wait_models_ready(target, [MODEL], cluster)  # a live worker serves it
                return asyncio.run(_sweep(model, target, meter, concurrencies, duration_s,
                                          rounds, seed))
            finally:
                meter.close()
        finally:
            cluster.stop()


def median_of(points: list[Point]) -> dict[str, Any]:
    """A system at one concurrency: the medians over its rounds, and every round."""
    first = points[0]
    return {"system": first.system, "concurrency": first.concurrency,
            "tokens_per_s": statistics.median(p.tokens_per_s for p in points),
            "ttft_p50_ms": statistics.median(p.ttft_ms(50) for p in points),
            "ttft_p90_ms": statistics.median(p.ttft_ms(90) for p in points),
            "rounds": [p.summary() for p in points]}


def _print(p: Point) -> None:
    print(f"  {p.system:10} c={p.concurrency:<3} {p.tokens_per_s:7.0f} tokens/s  TTFT p50 "
          f"{p.ttft_ms(50):7.1f} ms  p90 {p.ttft_ms(90):7.1f} ms  requests "
          f"{len(p.ttft_s)}  finishes {p.finishes}", flush=True)
    if p.costs:
        cpu = "  ".join(f"{name} {us:,.0f}" for name, us in p.costs["cpu_us"].items())
        print(f"      CPU µs/token: {cpu}  total {p.costs['total_cpu_us']:,.0f}; Redis "
              f"{p.costs['total_commands']:.1f} commands/token", flush=True)


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: tokens/s (TTFT p50 / p90 ms) of each system by concurrency, and ratios."""
    lines = ["| streams | maas | in-process static | in-process continuous "
             "| maas / static | continuous / static |", "|---:|---:|---:|---:|---:|---:|"]
    by = {(r["system"], r["concurrency"]): r for r in results}
    for c in sorted({r["concurrency"] for r in results}):
        m, s, k = (by[system, c] for system in ("maas", "static", "continuous"))
        cells = " | ".join(f"{r['tokens_per_s']:,.0f} ({r['ttft_p50_ms']:,.1f} / "
                           f"{r['ttft_p90_ms']:,.1f})" for r in (m, s, k))
        lines.append(f"| {c} | {cells} | {m['tokens_per_s'] / s['tokens_per_s']:.2f} | "
                     f"{k['tokens_per_s'] / s['tokens_per_s']:.2f} |")
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """Tokens/s and TTFT p50 of each pair of systems, by concurrency (medians' ratios)."""
    by = {(r["system"], r["concurrency"]): r for r in results}
    out = {}
    for c in sorted({r["concurrency"] for r in results}):
        for a, b in (("maas", "static"), ("continuous", "static"), ("maas", "continuous")):
            for metric in ("tokens_per_s", "ttft_p50_ms"):
                out[f"c{c}_{metric}_{a}_vs_{b}"] = by[a, c][metric] / by[b, c][metric]
    return out


LABELS = {"maas": "maas", "static": "in-process static",
          "continuous": "in-process continuous"}


def plot(results: list[dict[str, Any]], png: Path) -> None:
    """Tokens/s and TTFT p50/p90 against concurrency, one line per system, from the
    points' summaries (a run's JSON `results` re-plots the same way)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for system, label in LABELS.items():
        points = [r for r in results if r["system"] == system]
        xs = [r["concurrency"] for r in points]
        left.plot(xs, [r["tokens_per_s"] for r in points], marker="o", label=label)
        line, = right.plot(xs, [r["ttft_p50_ms"] for r in points], marker="o",
                           label=f"{label} p50")
        right.plot(xs, [r["ttft_p90_ms"] for r in points], marker="x", linestyle="--",
                   color=line.get_color(), label=f"{label} p90")
    concurrencies = sorted({r["concurrency"] for r in results})
    left.set(xlabel="concurrent streams", ylabel="tokens/s", title="generation throughput")
    right.set(yscale="log", xlabel="concurrent streams", ylabel="time to first token (ms)",
              title="time to first token (p50 solid, p90 dashed)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.minorticks_off()
    left.set_ylim(bottom=0)
    left.legend()
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generation")
    parser.add_argument("--duration", type=float, default=6.0,
                        help="seconds per point and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--worker-alone", action="store_true",
                        help="the worker alone on core 0; redis, scheduler, gateway on core 1 "
                             "with the load generator (default: all of maas on core 0)")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {CLIENT_CORE})
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    print(f"gpt {CONFIG}, random weights (seed {args.seed}), greedy; in-process static and "
          f"continuous on core 1; maas: " + ("1 worker on core 0, redis + scheduler + "
          "gateway on core 1" if args.worker_alone else "redis + scheduler + gateway + 1 "
          "worker on core 0") + ", AsyncClient.generate from core 1", flush=True)
    by_concurrency = bench(concurrencies, args.duration, args.rounds, args.seed,
                           args.worker_alone)
    results = [median_of(points) for by_system in by_concurrency.values()
               for points in by_system.values()]
    print(f"medians of {args.rounds} rounds: tokens/s (TTFT p50 / p90 ms)")
    print(table(results))
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}-generation.json").write_text(json.dumps({
        "when": stamp, "cpu_count": os.cpu_count(), "config": CONFIG, "seed": args.seed,
        "duration_s": args.duration, "rounds": args.rounds,
        "worker_alone": args.worker_alone, "results": results, "ratios": ratios(results)},
        indent=2))
    plot(results, out / f"{stamp}-generation.png")
    print(f"wrote {out}/{stamp}-generation.json and .png")


if __name__ == "__main__":
    main()
