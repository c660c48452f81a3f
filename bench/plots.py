"""PNG plots of a bench run: throughput against concurrency, and latency CDFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.loadgen import Result


def plot_results(results: list[Result], throughput_png: Path, cdf_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[Result]] = {}
    for r in results:
        series.setdefault(f"{r.target} {r.model}", []).append(r)
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, rs in series.items():
        ax.plot([r.concurrency for r in rs], [r.req_per_s for r in rs], marker="o", label=label)
    ax.set(xscale="log", xlabel="concurrent callers", ylabel="requests/s",
           title="v2 ModelInfer, batch-1 requests")
    ax.legend()
    fig.tight_layout()
    fig.savefig(throughput_png, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        if r.latencies_ms:
            lat = np.sort(r.latencies_ms)
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat),
                    label=f"{r.target} {r.model} c={r.concurrency}")
    ax.set(xscale="log", xlabel="latency (ms)", ylabel="fraction of requests",
           title="latency CDF")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(cdf_png, dpi=100)
    plt.close(fig)
