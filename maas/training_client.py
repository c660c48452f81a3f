"""SDK for training: the training and dataset calls (operations, see maas/calls.py), the
handles of a training job (`TrainingJobHandle`, `AsyncTrainingJobHandle`: watch, wait with a
progress bar, cancel) and dataset uploads in chunks with a checksum. Used through
`maas.Client` and `maas.AsyncClient`."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from maas.calls import AsyncRunner, Operation, Runner, Stream, Unary
from maas.v1 import dataset_service_pb2 as dpb
from maas.v1 import training_service_pb2 as tpb

CHUNK_BYTES = 1 << 20
TERMINAL = {tpb.TrainingJob.SUCCEEDED, tpb.TrainingJob.FAILED, tpb.TrainingJob.CANCELLED}
_SPEC_FIELDS = {f.name for f in tpb.TrainingSpec.DESCRIPTOR.fields}
# How long a handle's watch and wait follow a job, unless told.
WATCH_TIMEOUT_S = 24 * 3600


def training_spec(spec: Mapping[str, Any] | tpb.TrainingSpec) -> tpb.TrainingSpec:
    """A TrainingSpec from a message or a dict (`config` may be a dict; `name` = model_name)."""
    if isinstance(spec, tpb.TrainingSpec):
        return spec
    fields = dict(spec)
    if "name" in fields:
        fields["model_name"] = fields.pop("name")
    if "config" in fields:
        config = fields.pop("config")
        fields["config_json"] = config if isinstance(config, str) else json.dumps(config)
    unknown = sorted(set(fields) - _SPEC_FIELDS)
    if unknown:
        raise TypeError(f"unknown training spec fields {unknown}; known: {sorted(_SPEC_FIELDS)}")
    return tpb.TrainingSpec(**fields)


def train(spec: Mapping[str, Any] | tpb.TrainingSpec,
          request_id: str) -> Operation[tpb.TrainingJob]:
    request = tpb.CreateTrainingJobRequest(spec=training_spec(spec), request_id=request_id)
    return (yield Unary("training", "CreateTrainingJob", request)).job  # type: ignore[no-any-return]


def get_training_job(job_id: str) -> Operation[tpb.TrainingJob]:
    request = tpb.GetTrainingJobRequest(job_id=job_id)
    return (yield Unary("training", "GetTrainingJob", request)).job  # type: ignore[no-any-return]


def cancel_training_job(job_id: str) -> Operation[tpb.TrainingJob]:
    request = tpb.CancelTrainingJobRequest(job_id=job_id)
    return (yield Unary("training", "CancelTrainingJob", request)).job  # type: ignore[no-any-return]


def watch_training_job(job_id: str, after_sequence: int, timeout_s: float) -> Stream:
    """Every event of a job after `after_sequence`, ending with the terminal state change."""
    request = tpb.WatchTrainingJobRequest(job_id=job_id, after_sequence=after_sequence)
    return Stream("training", "WatchTrainingJob", request, timeout_s, lambda r: r.event)


def list_training_jobs(page_size: int) -> Operation[list[tpb.TrainingJob]]:
    request = tpb.ListTrainingJobsRequest(page_size=page_size)
    return list((yield Unary("training", "ListTrainingJobs", request)).jobs)


def upload_dataset(path: str | Path, name: str, file_format: str | None, progress: bool,
                   timeout_s: float) -> Operation[dpb.Dataset]:
    """Streams an .npz or .safetensors file (features, labels) in chunks, checksummed."""
    requests = upload_requests(Path(path), name, file_format, progress)
    return (yield Unary("datasets", "UploadDataset", requests, timeout_s)).dataset  # type: ignore[no-any-return]


def get_dataset(name: str) -> Operation[dpb.Dataset]:
    request = dpb.GetDatasetRequest(name=name)
    return (yield Unary("datasets", "GetDataset", request)).dataset  # type: ignore[no-any-return]


def list_datasets() -> Operation[list[dpb.Dataset]]:
    return list((yield Unary("datasets", "ListDatasets", dpb.ListDatasetsRequest())).datasets)


def delete_dataset(name: str) -> Operation[None]:
    yield Unary("datasets", "DeleteDataset", dpb.DeleteDatasetRequest(name=name))


class TrainingJobHandle:
    """A training job on the cluster. `job` is the state when last fetched."""

    def __init__(self, job: tpb.TrainingJob, client: Runner) -> None:
        self.job = job
        self._client = client

    @property
    def id(self) -> str:
        return self.job.job_id

    def refresh(self) -> tpb.TrainingJob:
        self.job = self._client._run(get_training_job(self.id))
        return self.job

    def cancel(self) -> tpb.TrainingJob:
        self.job = self._client._run(cancel_training_job(self.id))
        return self.job

    def watch(self, after_sequence: int = 0, timeout_s: float = WATCH_TIMEOUT_S,
              ) -> Iterator[tpb.TrainingEvent]:
        """Every event in order, ending with the terminal state change."""
        yield from self._client._stream(watch_training_job(self.id, after_sequence, timeout_s))

    def wait(self, progress: bool = False, timeout_s: float = WATCH_TIMEOUT_S
             ) -> tpb.TrainingJob:
        """Blocks until the job ends; progress=True draws a progress bar (tqdm) on stderr."""
        bar = _Progress(self.job, progress)
        for event in self.watch(timeout_s=timeout_s):
            bar.update(event)
        bar.close()
        return self.refresh()


class AsyncTrainingJobHandle:
    """`TrainingJobHandle` of an `AsyncClient`: the same methods, awaited; `watch` is an
    async iterator."""

    def __init__(self, job: tpb.TrainingJob, client: AsyncRunner) -> None:
        self.job = job
        self._client = client

    @property
    def id(self) -> str:
        return self.job.job_id

    async def refresh(self) -> tpb.TrainingJob:
        self.job = await self._client._run(get_training_job(self.id))
        return self.job

    async def cancel(self) -> tpb.TrainingJob:
        self.job = await self._client._run(cancel_training_job(self.id))
        return self.job

    async def watch(self, after_sequence: int = 0, timeout_s: float = WATCH_TIMEOUT_S,
                    ) -> AsyncIterator[tpb.TrainingEvent]:
        """Every event in order, ending with the terminal state change."""
        async for event in self._client._stream(
                watch_training_job(self.id, after_sequence, timeout_s)):
            yield event

    async def wait(self, progress: bool = False, timeout_s: float = WATCH_TIMEOUT_S
                   ) -> tpb.TrainingJob:
        """Until the job ends; progress=True draws a progress bar (tqdm) on stderr."""
        bar = _Progress(self.job, progress)
        async for event in self.watch(timeout_s=timeout_s):
            bar.update(event)
        bar.close()
        return await self.refresh()


class _Progress:
    """A job's steps, epochs and state as a tqdm bar on stderr; nothing unless `is_shown`."""

    def __init__(self, job: tpb.TrainingJob, is_shown: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=None, unit="step", file=sys.stderr, desc=job.spec.model_name,
                         disable=not is_shown)

    def update(self, event: tpb.TrainingEvent) -> None:
        if self._bar.disable:
            return
        kind = event.WhichOneof("event")
        if kind == "progress":
            p = event.progress
            if p.total_steps and self._bar.total != p.total_steps:
                self._bar.total = p.total_steps
            self._bar.n = p.global_step
            self._bar.set_postfix(epoch=p.epoch, loss=f"{p.loss:.4f}",
                                  samples_s=f"{p.samples_per_second:.0f}")
        elif kind == "epoch":
            e = event.epoch
            self._bar.write(f"epoch {e.epoch}: train_loss {e.train_loss:.4f}  "
                            f"val_loss {e.val_loss:.4f}  val_accuracy {e.val_accuracy:.4f}")
        elif kind == "state":
            self._bar.set_description(tpb.TrainingJob.State.Name(event.state))
        elif kind == "model_version":
            self._bar.write(f"registered {event.model_version}")

    def close(self) -> None:
        self._bar.close()


def upload_requests(path: Path, name: str, file_format: str | None,
                    progress: bool) -> Iterator[dpb.UploadDatasetRequest]:
    """A header (with the file's sha256), then 1 MiB chunks."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    fmt = file_format or ("safetensors" if path.suffix == ".safetensors" else "npz")
    yield dpb.UploadDatasetRequest(header=dpb.UploadDatasetHeader(
        name=name, format=fmt, size_bytes=size, sha256=digest.hexdigest()))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, file=sys.stderr, desc=name)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            if bar is not None:
                bar.update(len(block))
            yield dpb.UploadDatasetRequest(chunk=block)
    if bar is not None:
        bar.close()
