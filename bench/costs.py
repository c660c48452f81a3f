"""What one request costs each process of a server, read around a measured run.

A `Meter` reads, before and after: the CPU time of each process (/proc/<pid>/stat), Redis's
INFO commandstats (commands run, those inside scripts included) and AOF size, and the
counters the maas processes export on /metrics (lost and reclaimed leases, forwards and the
jobs they ran). `Costs` is the difference divided by the requests answered meanwhile.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

# Counters summed over their labels, by the name Costs gives them.
COUNTERS = {
    "lost_leases": "maas_worker_lost_leases_total",
    "reclaimed_leases": "maas_leases_reclaimed_total",
    "forwards": "maas_batch_size_count",
    "batched_jobs": "maas_batch_size_sum",
}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url: str) -> dict[str, float]:
    """The COUNTERS of one /metrics endpoint, summed over labels (0 when absent)."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    wanted = {v: k for k, v in COUNTERS.items()}
    found = dict.fromkeys(COUNTERS, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                found[wanted[sample.name]] += sample.value
    return found


@dataclass
class Snapshot:
    at_s: float
    cpu_s: dict[str, float]
    commands: dict[str, int] = field(default_factory=dict)
    aof_bytes: int = 0
    aof_rewrites: int = 0
    counters: dict[str, float] = field(default_factory=dict)


@dataclass
class Costs:
    """Per request over one measured run (`cpu_us` by process, `commands` by command)."""

    requests: int
    cpu_us: dict[str, float]
    commands: dict[str, float] = field(default_factory=dict)
    aof_bytes: float | None = None  # None: no AOF, or it was rewritten meanwhile
    lost_leases: int = 0  # in all, not per request
    reclaimed_leases: int = 0  # in all
    jobs_per_forward: float = 0.0

    @property
    def total_cpu_us(self) -> float:
        return sum(self.cpu_us.values())

    @property
    def total_commands(self) -> float:
        return sum(self.commands.values())

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "total_cpu_us": self.total_cpu_us,
                "total_commands": self.total_commands}

    def lines(self, floor_cpu_us: float | None = None) -> list[str]:
        """What bench prints under a point: CPU by process, Redis, AOF, leases."""
        cpu = "  ".join(f"{name} {us:,.0f}" for name, us in self.cpu_us.items())
        ratio = f" = {self.total_cpu_us / floor_cpu_us:.1f}x the floor" if floor_cpu_us else ""
        out = [f"      CPU µs/request: {cpu}  total {self.total_cpu_us:,.0f}{ratio}"]
        if self.commands:
            top = sorted(self.commands.items(), key=lambda kv: -kv[1])[:6]
            out.append(f"      Redis {self.total_commands:.1f} commands/request ("
                       + ", ".join(f"{c} {n:.2f}" for c, n in top) + ")"
                       + ("" if self.aof_bytes is None else
                          f"; AOF {self.aof_bytes:,.0f} B/request"))
        if self.jobs_per_forward or self.lost_leases or self.reclaimed_leases:
            out.append(f"      jobs/forward {self.jobs_per_forward:.1f}  lost leases "
                       f"{self.lost_leases}  reclaimed leases {self.reclaimed_leases}")
        return out


class Meter:
    """Reads a server's processes (`pids` by name), its Redis and its /metrics endpoints."""

    def __init__(self, pids: dict[str, int], redis_url: str | Sequence[str] | None = None,
                 metrics_urls: tuple[str, ...] = ()) -> None:
        """`redis_url`: the Redis whose commands and AOF are counted; several URLs (the
        primaries of a Redis Cluster) are summed."""
        self.pids = pids
        urls = [redis_url] if isinstance(redis_url, str) else list(redis_url or ())
        self._redis = [redis.Redis.from_url(url) for url in urls]
        self._metrics_urls = metrics_urls

    def snapshot(self) -> Snapshot:
        snap = Snapshot(time.monotonic(), {n: cpu_s(p) for n, p in self.pids.items()})
        for client in self._redis:
            for k, v in client.info("commandstats").items():
                name = k.removeprefix("cmdstat_")
                snap.commands[name] = snap.commands.get(name, 0) + int(v["calls"])
            persistence = client.info("persistence")
            snap.aof_bytes += int(persistence.get("aof_current_size", 0))
            snap.aof_rewrites += int(persistence.get("aof_rewrites", 0))
        for url in self._metrics_urls:
            for name, value in scrape(url).items():
                snap.counters[name] = snap.counters.get(name, 0.0) + value
        return snap

    def costs(self, before: Snapshot, after: Snapshot, requests: int) -> Costs:
        n = max(requests, 1)
        # The meter's own INFO calls are not the server's work.
        commands = {c: (after.commands[c] - before.commands.get(c, 0)) / n
                    for c in after.commands if c != "info"}
        has_aof = after.aof_bytes > 0 and after.aof_rewrites == before.aof_rewrites
        delta = {k: after.counters.get(k, 0.0) - before.counters.get(k, 0.0)
                 for k in COUNTERS}
        return Costs(
            requests=requests,
            cpu_us={k: 1e6 * (after.cpu_s[k] - before.cpu_s[k]) / n for k in self.pids},
            commands={c: v for c, v in commands.items() if v > 0},
            aof_bytes=(after.aof_bytes - before.aof_bytes) / n if has_aof else None,
            lost_leases=int(delta["lost_leases"]),
            reclaimed_leases=int(delta["reclaimed_leases"]),
            jobs_per_forward=(delta["batched_jobs"] / delta["forwards"]
                              if delta["forwards"] else 0.0))

    def idle_percent(self, seconds: float) -> dict[str, float]:
        """CPU of each process while nothing is asked of it, in % of one core (reads only
        /proc: an INFO or a scrape would be work asked of it)."""
        started, before = time.monotonic(), {n: cpu_s(p) for n, p in self.pids.items()}
        time.sleep(seconds)
        wall_s = time.monotonic() - started
        return {n: 100 * (cpu_s(p) - before[n]) / wall_s for n, p in self.pids.items()}

    def close(self) -> None:
        for client in self._redis:
            client.close()
