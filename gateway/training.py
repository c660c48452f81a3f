"""maas.v1.TrainingService: validate specs at the door, queue jobs, stream their events.

A job belongs to the caller's tenant. Its stored spec names the tenant's model, dataset and
base model by id (`<tenant>/<name>`, what the worker needs); clients see names.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import numpy as np

from gateway.auth import caller
from gateway.bounds import check_page_token, check_request_id, page_size
from gateway.datasets import BUILTIN
from maas import datasets
from maas.architectures import get_architecture
from maas.errors import (
    FieldViolation,
    IdempotencyKeyReused,
    InvalidArgument,
    MaasError,
    QuotaExceeded,
    QuotaViolation,
    shown,
)
from maas.queue.v1.queue_pb2 import JobEnvelope, JobKind, TrainTask
from maas.settings import Settings
from maas.training_proto import from_proto, to_proto
from maas.training_spec import TrainingSpec
from maas.v1 import training_service_pb2 as pb
from maas.v1.training_service_pb2_grpc import TrainingServiceServicer
from scheduler import keys
from scheduler.datasets import DatasetStore
from scheduler.queue import SubmitStatus
from scheduler.registry import ModelRegistry, check_model_name
from scheduler.training import TERMINAL, EventCursor, TrainingStore

DEFAULT_PAGE_SIZE = 50
# ListTrainingJobs' next_page_token: the creation score (ms) to continue below.
PAGE_TOKEN = re.compile(r"[0-9]{1,20}")


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


class TrainingServicer(TrainingServiceServicer):
    def __init__(self, settings: Settings, store: TrainingStore, registry: ModelRegistry,
                 datasets_store: DatasetStore) -> None:
        self._settings = settings
        self._store = store
        self._registry = registry
        self._datasets = datasets_store

    async def _validated(self, request: pb.CreateTrainingJobRequest,
                         tenant: str) -> tuple[TrainingSpec, str]:
        """The spec with the tenant's ids in it (dataset, init_from), and the dataset's sha."""
        try:
            check_model_name(request.spec.model_name)
            spec = from_proto(request.spec).with_config_resolved()
        except InvalidArgument as err:
            if err.violations and err.violations[0].field == "name":
                raise InvalidArgument(err.message, violations=(
                    FieldViolation("spec.model_name", err.message),)) from None
            raise _prefixed(err) from None
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
        probe = datasets.Dataset(spec.dataset, np.zeros((1, *record.feature_shape), np.float32),
                                 np.zeros(1, np.int64))
        try:
            datasets.present(probe, arch.inputs(spec.config)[0].shape)
        except InvalidArgument as err:
            raise _prefixed(err) from None
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

    async def CreateTrainingJob(self, request: pb.CreateTrainingJobRequest,
                                context: grpc.aio.ServicerContext) -> pb.CreateTrainingJobResponse:
        check_request_id(request.request_id)
        tenant = caller().tenant
        spec, dataset_sha = await self._validated(request, tenant)
        model_id = keys.model_id(tenant, request.spec.model_name)
        job = pb.TrainingJob(job_id=uuid.uuid4().hex, spec=to_proto(model_id, spec),
                             state=pb.TrainingJob.QUEUED, request_id=request.request_id,
                             dataset_sha256=dataset_sha)
        job.create_time.GetCurrentTime()
        envelope = JobEnvelope(job_id=job.job_id, kind=JobKind.JOB_KIND_TRAIN,
                               model=keys.TRAINING_QUEUE, idempotency_key=request.request_id,
                               tenant=tenant,
                               max_attempts=self._settings.train_max_attempts,
                               enqueue_unix_ms=int(time.time() * 1000),
                               train=TrainTask(spec=job.spec))
        status, job_id = await self._store.create(job, envelope)
        if status == SubmitStatus.MISMATCH:
            raise IdempotencyKeyReused(f"request_id {request.request_id!r} was used for a "
                                       f"different spec (job {job_id})")
        if status == SubmitStatus.QUOTA:
            limit = self._store.max_active
            raise QuotaExceeded(
                f"tenant {tenant!r} has {job_id} training jobs queued or running, its most "
                f"(MAAS_TENANT_MAX_TRAINING={limit}): wait for one to end, then retry",
                retry_delay_s=5.0, quota_violations=(QuotaViolation(
                    f"tenant:{tenant}", f"at most {limit} training jobs at once"),))
        return pb.CreateTrainingJobResponse(job=public_job(await self._store.get(job_id)))

    async def GetTrainingJob(self, request: pb.GetTrainingJobRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetTrainingJobResponse:
        return pb.GetTrainingJobResponse(
            job=public_job(await self._store.get(request.job_id, caller().tenant)))

    async def ListTrainingJobs(self, request: pb.ListTrainingJobsRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListTrainingJobsResponse:
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE)
        check_page_token(request.page_token, PAGE_TOKEN)
        jobs, token = await self._store.list(size, request.page_token, caller().tenant)
        return pb.ListTrainingJobsResponse(jobs=[public_job(j) for j in jobs],
                                           next_page_token=token)

    async def CancelTrainingJob(self, request: pb.CancelTrainingJobRequest,
                                context: grpc.aio.ServicerContext) -> pb.CancelTrainingJobResponse:
        return pb.CancelTrainingJobResponse(
            job=public_job(await self._store.cancel(request.job_id, caller().tenant)))

    async def WatchTrainingJob(self, request: pb.WatchTrainingJobRequest,
                               context: grpc.aio.ServicerContext,
                               ) -> AsyncIterator[pb.WatchTrainingJobResponse]:
        job = await self._store.get(request.job_id, caller().tenant)
        cursor = EventCursor()
        while True:
            events, cursor = await self._store.events(job.job_id, cursor, block_ms=1000)
            for event in events:
                if event.sequence > request.after_sequence:
                    if event.WhichOneof("event") == "model_version":
                        event.model_version = _name(event.model_version)
                    yield pb.WatchTrainingJobResponse(event=event)
                if event.WhichOneof("event") == "state" and event.state in TERMINAL:
                    return
            if not events and (await self._store.get(job.job_id)).state in TERMINAL:
                return  # ended without an event (dead-lettered by the reaper)
