"""`maas workers list` (admin): each live worker's id, device, the models it serves
(MAAS_WORKER_MODELS), the versions it has loaded and the memory they use."""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.json_format import MessageToDict

from maas.cli.commands import add_client_flags, client_for, emit
from maas.v1 import queue_service_pb2 as qpb

MIB = 1024 * 1024


def _memory(worker: qpb.Worker) -> str:
    used = f"{worker.model_memory_bytes / MIB:.1f} MiB"
    budget = worker.model_memory_budget_bytes
    return f"{used} of {budget / MIB:.0f} MiB" if budget else f"{used} (no budget)"


def worker_line(worker: qpb.Worker) -> str:
    serves = ",".join(worker.serves) or "all"
    loaded = ",".join(worker.loaded) or "-"
    return (f"{worker.worker_id}  device {worker.device}  serves {serves}  loaded {loaded}  "
            f"memory {_memory(worker)}  jobs {worker.jobs}")


def cmd_workers(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        workers = client.workers()
    doc: dict[str, Any] = {"workers": [MessageToDict(w, preserving_proto_field_name=True)
                                       for w in workers]}
    emit(args, doc, "\n".join(worker_line(w) for w in workers) or "no live workers")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    workers = sub.add_parser("workers", help="the live workers (admin)")
    wsub = workers.add_subparsers(dest="workers_command", required=True)
    lst = wsub.add_parser("list", help="each worker's device, models served and loaded, memory")
    add_client_flags(lst)
    lst.set_defaults(func=cmd_workers)
