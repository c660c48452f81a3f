"""`maas queues stats [--model M]`: per model the key sees, its jobs waiting and leased by
priority, the oldest one's age, the jobs delivered so far (with `--rate-over S`, jobs/s over
S seconds from two reads), dead letters and the live workers serving it."""

from __future__ import annotations

import argparse
import time
from typing import Any

from google.protobuf.json_format import MessageToDict

from maas.cli.commands import add_client_flags, client_for, emit
from maas.v1 import queue_service_pb2 as qpb

LEVELS = {qpb.QUEUE_PRIORITY_HIGH: "high", qpb.QUEUE_PRIORITY_NORMAL: "normal",
          qpb.QUEUE_PRIORITY_LOW: "low"}


def jobs_per_s(before: qpb.ModelQueueStats, after: qpb.ModelQueueStats) -> list[float | None]:
    """Per priority, the jobs delivered per second between two reads of one model (None
    where the counter went down: Redis could not tell for a moment)."""
    seconds = (after.read_time.ToMilliseconds() - before.read_time.ToMilliseconds()) / 1000
    return [None if seconds <= 0 or b.delivered_total > a.delivered_total
            else (a.delivered_total - b.delivered_total) / seconds
            for b, a in zip(before.priorities, after.priorities, strict=True)]


def model_lines(stats: qpb.ModelQueueStats, rates: list[float | None] | None) -> list[str]:
    workers = ",".join(stats.worker_ids) or str(stats.serving_workers)
    lines = [f"{stats.model}{' (shared)' if stats.shared else ''}  workers {workers}  "
             f"dead letters {stats.dead_letters}  delayed {stats.delayed}"]
    for i, p in enumerate(stats.priorities):
        rate = "" if rates is None else (
            "  rate -" if rates[i] is None else f"  rate {rates[i]:.2f} jobs/s")
        lines.append(f"  {LEVELS.get(p.priority, '?'):<6}  waiting {p.waiting}  leased "
                     f"{p.leased}  oldest {p.oldest_age_seconds:.1f}s  delivered "
                     f"{p.delivered_total}  your backlog {p.tenant_backlog}{rate}")
    return lines


def cmd_stats(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        found = client.queue_stats(args.model)
        rates: dict[str, list[float | None]] = {}
        if args.rate_over:
            time.sleep(args.rate_over)
            before = {s.model: s for s in found}
            found = client.queue_stats(args.model)
            rates = {s.model: jobs_per_s(before[s.model], s) for s in found
                     if s.model in before}
    doc: dict[str, Any] = {"models": [
        {**MessageToDict(s, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True),
         **({"jobs_per_s": rates[s.model]} if s.model in rates else {})} for s in found]}
    lines = [line for s in found for line in model_lines(s, rates.get(s.model)
                                                          if args.rate_over else None)]
    emit(args, doc, "\n".join(lines) or "no models")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    queues = sub.add_parser("queues", help="the queues of your models")
    qsub = queues.add_subparsers(dest="queues_command", required=True)
    stats = qsub.add_parser("stats", help="jobs waiting and leased by priority, oldest age, "
                                          "deliveries, dead letters, workers")
    stats.add_argument("--model", default=None,
                       help="one model (an admin names a tenant's model tenant/name)")
    stats.add_argument("--rate-over", type=float, default=0.0, metavar="S",
                       help="read twice, S seconds apart, and print jobs/s per priority")
    add_client_flags(stats)
    stats.set_defaults(func=cmd_stats)
