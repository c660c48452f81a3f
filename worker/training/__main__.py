"""`python -m worker.training --spec spec.json --dataset digits --out DIR`: one training job.

stdout carries one JSON object per line: the runner's events, then a `result` (or `error`)
object. Exit status: 0 succeeded, 2 invalid argument, 3 stopped by SIGTERM/SIGINT (the
checkpoint is kept; run again with the same --out to resume), 1 anything else.

With --world-size N > 1 it is one replica of a data-parallel job: rank 0 prints a
`rendezvous` object with the port of its store first, the other ranks get rank 0's
host:port as --master; only rank 0 prints events and writes checkpoints and weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from maas.errors import MaasError
from runtime.datasets import (
    BUILTIN_DATASETS,
    MAX_DATASET_BYTES,
    Dataset,
    builtin_dataset,
    load_npz_bytes,
    load_safetensors_bytes,
)
from runtime.logs import configure_logging
from runtime.settings import Settings
from runtime.training_spec import TrainingSpec

logger = logging.getLogger(__name__)


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


def _ignore(event: dict[str, Any]) -> None:
    """Events of ranks > 0: rank 0 reports for the whole job."""


def load_dataset(ref: str, max_bytes: int = MAX_DATASET_BYTES) -> Dataset:
    """A built-in dataset by name, or a .npz / .safetensors file by path."""
    if ref in BUILTIN_DATASETS:
        return builtin_dataset(ref)
    path = Path(ref)
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        return load_safetensors_bytes(data, name=path.name, max_bytes=max_bytes)
    return load_npz_bytes(data, name=path.name, max_bytes=max_bytes)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.training")
    parser.add_argument("--spec", required=True, type=Path, help="TrainingSpec as JSON")
    parser.add_argument("--dataset", required=True, help="built-in name or .npz/.safetensors")
    parser.add_argument("--out", required=True, type=Path, help="job directory (resumed)")
    parser.add_argument("--init-weights", type=Path, help="safetensors to start from")
    parser.add_argument("--threads", type=int, help="torch threads (default MAAS_TORCH_THREADS)")
    parser.add_argument("--device", help="auto, cpu, cuda:0 (default MAAS_WORKER_DEVICE)")
    parser.add_argument("--rank", type=int, default=0, help="this replica's rank")
    parser.add_argument("--world-size", type=int, default=1, help="replicas of the job")
    parser.add_argument("--master", default="", help="rank 0's store host:port (rank > 0)")
    parser.add_argument("--group-timeout-s", type=float, default=120.0,
                        help="how long to wait for the other replicas (and any collective)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = Settings.from_env(torch_threads=args.threads, worker_device=args.device)
    threads = settings.torch_threads if settings.torch_threads > 0 else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # before torch is imported
    configure_logging(settings, "trainer")
    stop = {"requested": False}

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        return _run(args, settings, threads, lambda: stop["requested"])
    except MaasError as exc:
        _emit({"type": "error", "code": exc.code.name, "reason": exc.reason,
               "message": exc.message,
               "violations": [{"field": v.field, "description": v.description}
                              for v in exc.violations]})
        return 2 if exc.code.name == "INVALID_ARGUMENT" else 1
    except Exception as exc:
        logger.exception("training failed")
        _emit({"type": "error", "code": "INTERNAL", "reason": "INTERNAL",
               "message": f"{type(exc).__name__}: {exc}", "violations": []})
        return 1


def _run(args: argparse.Namespace, settings: Settings, threads: int,
         should_stop: Callable[[], bool]) -> int:
    import safetensors.torch
    import torch

    from worker.training import distributed
    from worker.training.determinism import pick_device
    from worker.training.runner import run_training

    torch.set_num_threads(threads)
    spec = TrainingSpec.from_json(args.spec.read_bytes())
    dataset = load_dataset(args.dataset, settings.max_dataset_bytes)
    init = safetensors.torch.load_file(args.init_weights) if args.init_weights else None
    replica = distributed.Replica(args.rank, args.world_size)
    if replica.is_distributed:
        store = distributed.open_store(args.rank, args.world_size, args.master,
                                       args.group_timeout_s)
        if replica.is_leader:
            _emit({"type": "rendezvous", "port": store.port})
        distributed.join_group(replica, store, pick_device(settings.worker_device),
                               args.group_timeout_s)
    try:
        outcome = run_training(spec, dataset, args.out,
                               _emit if replica.is_leader else _ignore, init_state_dict=init,
                               should_stop=should_stop, device=settings.worker_device,
                               replica=replica)
    finally:
        distributed.leave_group()
    _emit({"type": "result", "status": outcome.status, "sha256": outcome.sha256,
           "weights_path": outcome.weights_path, "steps": outcome.steps,
           "epochs": outcome.epochs, "best_epoch": outcome.best_epoch,
           "metrics": outcome.metrics})
    return 0 if outcome.status == "SUCCEEDED" else 3


if __name__ == "__main__":
    sys.exit(main())
