"""Training commands of the CLI: datasets, train, jobs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from maas.cli.commands import add_client_flags, client_for, emit
from maas.client import Client
from maas.v1 import training_service_pb2 as tpb
from maas.v1.inference_service_pb2 import InferenceJob

_SPEC_FLAGS = ("architecture", "dataset", "init_from", "optimizer", "lr", "momentum",
               "weight_decay", "batch_size", "epochs", "max_steps", "seed", "checkpoint_every",
               "validation_fraction", "keep", "loss")


def _doc(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def _job_line(job: tpb.TrainingJob) -> str:
    acc = job.metrics.get("val_accuracy")
    metric = f"  val_accuracy {acc:.4f}" if acc is not None else ""
    result = f"  → {job.model_version}" if job.model_version else ""
    error = f"  ({job.error})" if job.error else ""
    return (f"{job.job_id}  {tpb.TrainingJob.State.Name(job.state):<10} "
            f"{job.spec.model_name}{metric}{result}{error}")


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(Path(args.spec).read_text()) if args.spec else {}
    spec.update({k: getattr(args, k) for k in _SPEC_FLAGS if getattr(args, k) is not None})
    if args.config is not None:
        spec["config"] = args.config
    spec["model_name"] = args.name or spec.pop("name", spec.get("model_name", ""))
    return spec


def cmd_train(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        handle = client.train(spec_from_args(args), request_id=args.request_id or "")
        if args.watch:
            if not args.json:
                print(f"job {handle.id} queued", file=sys.stderr)
            handle.wait(progress=not args.json)
        job = handle.refresh()
    emit(args, _doc(job), _job_line(job))
    return 0 if job.state != tpb.TrainingJob.FAILED else 1


def _queue_ops(args: argparse.Namespace, client: Client) -> int:
    if args.jobs_command == "dlq":
        letters = client.dead_letters(args.model)
        emit(args, {"dead_letters": [_doc(d) for d in letters]},
             "\n".join(f"{d.job_id}  attempts {d.attempts}  "
                       f"{'redrivable' if d.redrivable else 'expired'}" for d in letters)
             or "no dead letters")
    else:
        done = client.redrive(args.model, args.job_ids)
        emit(args, {"redriven": done}, f"queued again: {len(done)} jobs")
    return 0


def _inference_job(args: argparse.Namespace, client: Client) -> int:
    if args.jobs_command == "cancel":
        job = client.cancel_job(args.job_id)
    elif args.jobs_command == "watch":
        job = client.wait_job(args.job_id, timeout_s=args.timeout)
    else:
        job = client.get_job(args.job_id)
    doc = _doc(job)
    for tensor in doc.get("outputs", []):
        tensor.pop("raw", None)  # base64 bytes; `maas.Client.get_job` returns the arrays
    emit(args, doc, f"{job.job_id}  {InferenceJob.State.Name(job.state)}  "
                    f"{job.model}:{job.model_version}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        if args.jobs_command in ("dlq", "redrive"):
            return _queue_ops(args, client)
        if ":" in getattr(args, "job_id", ""):  # "<model>:<hex>": an inference job
            return _inference_job(args, client)
        if args.jobs_command == "list":
            jobs = client.list_training_jobs()
            emit(args, {"jobs": [_doc(j) for j in jobs]},
                 "\n".join(_job_line(j) for j in jobs) or "no jobs")
            return 0
        handle = client.training_job(args.job_id)
        if args.jobs_command == "cancel":
            handle.cancel()
        elif args.jobs_command == "watch":
            if args.json:
                for event in handle.watch():
                    print(json.dumps(_doc(event)), flush=True)
                return 0
            handle.wait(progress=True)
        job = handle.refresh()
    emit(args, _doc(job), _job_line(job))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        if args.datasets_command == "upload":
            found = [client.upload_dataset(args.file, args.name, progress=not args.json)]
        elif args.datasets_command == "get":
            found = [client.get_dataset(args.name)]
        elif args.datasets_command == "delete":
            client.delete_dataset(args.name)
            emit(args, {"deleted": args.name}, f"deleted {args.name}")
            return 0
        else:
            found = client.list_datasets()
    docs = [_doc(d) for d in found]
    lines = [f"{d.name}  {d.num_samples} samples  features {list(d.feature_shape)}  "
             f"{d.num_classes} classes  {d.format}  {d.sha256[:12]}" for d in found]
    emit(args, docs[0] if args.datasets_command in ("upload", "get") else {"datasets": docs},
         "\n".join(lines))
    return 0


def _train_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    train = sub.add_parser("train", help="train a model through the cluster")
    train.add_argument("--name", help="the model whose next version the result becomes")
    train.add_argument("--spec", help="a TrainingSpec as a JSON file (flags override it)")
    train.add_argument("--architecture")
    train.add_argument("--config", help="the architecture's config as JSON")
    train.add_argument("--dataset", help="built-in (digits) or an uploaded dataset")
    train.add_argument("--init-from", dest="init_from", help="MODEL[:VERSION] to fine-tune")
    train.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    train.add_argument("--loss")
    for name, kind in (("lr", float), ("momentum", float), ("weight-decay", float),
                       ("batch-size", int), ("epochs", int), ("max-steps", int), ("seed", int),
                       ("checkpoint-every", int), ("validation-fraction", float)):
        train.add_argument(f"--{name}", dest=name.replace("-", "_"), type=kind)
    train.add_argument("--keep", choices=["last", "best"])
    train.add_argument("--request-id", help="idempotency key")
    train.add_argument("--watch", action="store_true", help="follow the job with a progress bar")
    add_client_flags(train)
    train.set_defaults(func=cmd_train)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _train_parser(sub)
    jobs = sub.add_parser("jobs", help="training jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True)
    for name, text in (("get", "one job"), ("cancel", "cancel a job"),
                       ("watch", "follow a job's events")):
        p = jsub.add_parser(name, help=text)
        p.add_argument("job_id")
    jsub.add_parser("list", help="every training job, newest first")
    dlq = jsub.add_parser("dlq", help="a model's dead-lettered jobs")
    dlq.add_argument("model")
    redrive = jsub.add_parser("redrive", help="queue dead-lettered jobs again")
    redrive.add_argument("model")
    redrive.add_argument("job_ids", nargs="*", help="default: all of the model's")
    for p in jsub.choices.values():
        add_client_flags(p)
        p.set_defaults(func=cmd_jobs)

    ds = sub.add_parser("datasets", help="upload and manage datasets")
    dsub = ds.add_subparsers(dest="datasets_command", required=True)
    up = dsub.add_parser("upload", help="upload an .npz/.safetensors with features, labels")
    up.add_argument("file")
    up.add_argument("--name", required=True)
    for name in ("get", "delete"):
        dsub.add_parser(name).add_argument("name")
    dsub.add_parser("list")
    for p in dsub.choices.values():
        add_client_flags(p)
        p.set_defaults(func=cmd_datasets)
