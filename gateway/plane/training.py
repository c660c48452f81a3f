"""Training: validate specs at the door, queue training jobs, read, list, cancel, watch them.

Transport-free: it takes and returns maas.v1 protobufs and the caller's tenant; the servicer
(gateway/training.py) only translates. A job belongs to the caller's tenant. Its stored spec
names the tenant's model, dataset and base model by id (`<tenant>/<name>`, what the worker
needs); what leaves here names them as the tenant does (`public_job`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import replace

import numpy as np

from gateway.bounds import check_page_token, check_request_id, page_size
from gateway.plane.datasets import BUILTIN
from maas.errors import (
    FieldViolation,
    InvalidArgument,
    MaasError,
    shown,
)
from maas.v1 import training_service_pb2 as pb
from runtime import datasets
from runtime.architectures import get_architecture
from runtime.queue.v1.queue_pb2 import JobEnvelope, JobKind, TrainTask
from runtime.settings import Settings
from runtime.training_proto import from_proto, to_proto
from runtime.training_spec import TrainingSpec
from scheduler import keys
from scheduler.datasets import DatasetStore
from scheduler.queue import new_job_id
from scheduler.registry import ModelRegistry, check_model_name
from scheduler.training import TERMINAL, EventCursor, TrainingStore

DEFAULT_PAGE_SIZE = 50
# ListTrainingJobs' next_page_token: the creation score (ms) to continue below.
PAGE_TOKEN = re.compile(r"[0-9]{1,20}(?:\.[0-9a-f]{32})?")  # scheduler/training.py list
WATCH_BLOCK_MS = 1000  # how long one read of a job's events waits for new ones


def _name(ref: str) -> str:
    """A reference (`id[:version]`) as its owner writes it: without the tenant."""
    return keys.split_model_id(ref)[1]


def public_job(job: pb.TrainingJob) -> pb.TrainingJob:
    """The job as its tenant sees it (names, not ids); changes `job` in place."""
    job.spec.model_name = _name(job.spec.model_name)
    job.spec.dataset = _name(job.spec.dataset)
    job.spec.init_from = _name(job.spec.init_from)
    job.model_version = _name(job.model_version)
    return job


def _prefixed(err: MaasError) -> InvalidArgument:
    violations = tuple(FieldViolation(f"spec.{v.field}", v.description) for v in err.violations)
    return InvalidArgument(err.message, reason=err.reason, violations=violations)


def _parsed(spec: pb.TrainingSpec) -> TrainingSpec:
    """The spec's own checks (runtime.training_spec), with fields named as in the request."""
    try:
        check_model_name(spec.model_name)
        return from_proto(spec).with_config_resolved()
    except InvalidArgument as err:
        if err.violations and err.violations[0].field == "name":
            raise InvalidArgument(err.message, violations=(
                FieldViolation("spec.model_name", err.message),)) from None
        raise _prefixed(err) from None


def _check_prompts(dataset: str, num_classes: int, steps: int) -> None:
    """A generative model's labels are prompt lengths: each must leave a token to predict
    (the worker checks each row against its own length)."""
    if num_classes > steps:
        raise InvalidArgument(
            f"dataset {dataset!r} has labels up to {num_classes - 1}; a generative model reads "
            f"them as prompt lengths, which must be below the {steps} tokens of a sample",
            violations=(FieldViolation("spec.dataset.labels", "prompt length out of range"),))


class SpecChecks:
    """What a spec needs from this cluster: its size limits, the dataset, the base model."""

    def __init__(self, settings: Settings, registry: ModelRegistry,
                 datasets_store: DatasetStore) -> None:
        self._settings = settings
        self._registry = registry
        self._datasets = datasets_store

    async def validated(self, request: pb.CreateTrainingJobRequest,
                        tenant: str) -> tuple[TrainingSpec, str]:
        """The spec with the tenant's ids in it (dataset, init_from), and the dataset's sha."""
        spec = _parsed(request.spec)
        if spec.replicas > self._settings.train_max_replicas:
            raise InvalidArgument(
                f"replicas {spec.replicas} is more than this cluster allows "
                f"({self._settings.train_max_replicas}, MAAS_TRAIN_MAX_REPLICAS)",
                violations=(FieldViolation("spec.replicas", "more than the cluster's maximum"),))
        self._check_size(spec)
        dataset_sha = await self._check_dataset(spec, tenant)
        if spec.dataset not in BUILTIN:
            spec = replace(spec, dataset=keys.model_id(tenant, spec.dataset))
        if spec.init_from:
            spec = replace(spec, init_from=await self._check_init_from(spec, tenant))
        return spec, dataset_sha

    def _check_size(self, spec: TrainingSpec) -> None:
        """The model's parameter count (worked out from the config, nothing allocated) is
        within MAAS_TRAIN_MAX_PARAMS."""
        params = get_architecture(spec.architecture).param_count(spec.config)
        limit = self._settings.train_max_params
        if params > limit:
            raise InvalidArgument(
                f"this {spec.architecture} config has {params:,} parameters, more than this "
                f"cluster trains ({limit:,}, MAAS_TRAIN_MAX_PARAMS): make it smaller",
                violations=(FieldViolation("spec.config", f"{params} parameters; at most "
                                                          f"{limit}"),))

    async def _check_dataset(self, spec: TrainingSpec, tenant: str) -> str:
        """The dataset exists for the tenant, fits the model's input and classes; its sha."""
        record = BUILTIN.get(spec.dataset)
        if record is None:
            try:
                check_model_name(spec.dataset)
                record = await self._datasets.get(spec.dataset, tenant)
            except MaasError:
                raise InvalidArgument(f"unknown dataset {shown(spec.dataset)}", violations=(
                    FieldViolation("spec.dataset", "no such dataset (upload it first; "
                                   f"built-in: {', '.join(BUILTIN)})"),)) from None
        arch = get_architecture(spec.architecture)
        # One zero sample of the dataset's shape: the worker's own reshaping decides the fit.
        probe = datasets.Dataset(spec.dataset, np.zeros((1, *record.feature_shape), np.float32),
                                 np.zeros(1, np.int64))
        try:
            datasets.present(probe, arch.inputs(spec.config)[0].shape)
        except InvalidArgument as err:
            raise _prefixed(err) from None
        if arch.is_generative:
            _check_prompts(spec.dataset, record.num_classes, int(record.feature_shape[-1]))
            return record.sha256
        classes = arch.outputs(spec.config)[0].shape[-1]
        if record.num_classes > classes:
            raise InvalidArgument(
                f"dataset {spec.dataset!r} has labels up to {record.num_classes - 1}, out of "
                f"range for the model's {classes} classes",
                violations=(FieldViolation("spec.dataset.labels", "label out of range"),))
        return record.sha256

    async def _check_init_from(self, spec: TrainingSpec, tenant: str) -> str:
        """The base model's id (own, else shared) with the version asked for."""
        name, sep, version = spec.init_from.partition(":")
        try:
            base = await self._registry.resolve_visible(tenant, name, version)
        except MaasError as err:
            raise InvalidArgument(err.message, violations=(
                FieldViolation("spec.init_from", err.message),)) from None
        if base.architecture != spec.architecture or json.loads(base.config_json) != spec.config:
            raise InvalidArgument(
                f"init_from {spec.init_from} is a {base.architecture} "
                f"{shown(base.config_json, 200)}, not "
                f"the spec's {spec.architecture} {json.dumps(spec.config)}",
                violations=(FieldViolation("spec.init_from", "architecture mismatch"),))
        return f"{base.model}{sep}{version}"


class Training:
    def __init__(self, settings: Settings, store: TrainingStore, registry: ModelRegistry,
                 datasets_store: DatasetStore) -> None:
        self._settings = settings
        self._store = store
        self._checks = SpecChecks(settings, registry, datasets_store)

    async def create(self, request: pb.CreateTrainingJobRequest, tenant: str) -> pb.TrainingJob:
        """Queues a training job (or finds the one of the same request_id) and returns it."""
        check_request_id(request.request_id)
        spec, dataset_sha = await self._checks.validated(request, tenant)
        model_id = keys.model_id(tenant, request.spec.model_name)
        job = pb.TrainingJob(job_id=new_job_id(), spec=to_proto(model_id, spec),
                             state=pb.TrainingJob.QUEUED, request_id=request.request_id,
                             dataset_sha256=dataset_sha)
        job.create_time.GetCurrentTime()
        envelope = JobEnvelope(job_id=job.job_id, kind=JobKind.JOB_KIND_TRAIN,
                               model=keys.TRAINING_QUEUE, idempotency_key=request.request_id,
                               tenant=tenant, max_attempts=self._settings.train_max_attempts,
                               enqueue_unix_ms=int(time.time() * 1000),
                               train=TrainTask(spec=job.spec))
        _, job_id = await self._store.create(job, envelope)  # raises a refusal
        return public_job(await self._store.get(job_id))

    async def get(self, job_id: str, tenant: str) -> pb.TrainingJob:
        return public_job(await self._store.get(job_id, tenant))

    async def list_jobs(self, size: int, page_token: str,
                   tenant: str) -> tuple[list[pb.TrainingJob], str]:
        """A page of the tenant's jobs, newest first, and the token of the next ("" = none)."""
        count = page_size(size, DEFAULT_PAGE_SIZE)
        check_page_token(page_token, PAGE_TOKEN)
        jobs, token = await self._store.list(count, page_token, tenant)
        return [public_job(j) for j in jobs], token

    async def cancel(self, job_id: str, tenant: str) -> pb.TrainingJob:
        return public_job(await self._store.cancel(job_id, tenant))

    async def watch(self, job_id: str, after_sequence: int,
                    tenant: str) -> AsyncGenerator[pb.TrainingEvent, None]:
        """The job's events after `after_sequence`, until it ends."""
        job = await self._store.get(job_id, tenant)
        cursor = EventCursor()
        while True:
            events, cursor = await self._store.events(job.job_id, cursor,
                                                      block_ms=WATCH_BLOCK_MS)
            for event in events:
                if event.sequence > after_sequence:
                    if event.WhichOneof("event") == "model_version":
                        event.model_version = _name(event.model_version)
                    yield event
                if event.WhichOneof("event") == "state" and event.state in TERMINAL:
                    return
            if not events and (await self._store.get(job.job_id)).state in TERMINAL:
                return  # ended without an event (dead-lettered by the reaper)
