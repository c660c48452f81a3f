"""SDK for training: `TrainingJobHandle` (watch, wait with a progress bar, cancel) and
dataset uploads in chunks with a checksum. Used through `maas.Client`."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from maas.v1 import dataset_service_pb2 as dpb
from maas.v1 import training_service_pb2 as tpb

CHUNK_BYTES = 1 << 20
TERMINAL = {tpb.TrainingJob.SUCCEEDED, tpb.TrainingJob.FAILED, tpb.TrainingJob.CANCELLED}
_SPEC_FIELDS = {f.name for f in tpb.TrainingSpec.DESCRIPTOR.fields}

Call = Callable[[Any, Any, float | None], Any]


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


class TrainingJobHandle:
    """A training job on the cluster. `job` is the state when last fetched."""

    def __init__(self, job: tpb.TrainingJob, stub: Any, call: Call) -> None:
        self.job = job
        self._stub = stub
        self._call = call

    @property
    def id(self) -> str:
        return self.job.job_id

    def refresh(self) -> tpb.TrainingJob:
        self.job = self._call(self._stub.GetTrainingJob,
                              tpb.GetTrainingJobRequest(job_id=self.id), None).job
        return self.job

    def cancel(self) -> tpb.TrainingJob:
        self.job = self._call(self._stub.CancelTrainingJob,
                              tpb.CancelTrainingJobRequest(job_id=self.id), None).job
        return self.job

    def watch(self, after_sequence: int = 0, timeout_s: float = 24 * 3600,
              ) -> Iterator[tpb.TrainingEvent]:
        """Every event in order, ending with the terminal state change."""
        stream = self._stub.WatchTrainingJob(
            tpb.WatchTrainingJobRequest(job_id=self.id, after_sequence=after_sequence),
            timeout=timeout_s)
        for response in stream:
            yield response.event

    def wait(self, progress: bool = False, timeout_s: float = 24 * 3600) -> tpb.TrainingJob:
        """Blocks until the job ends; progress=True draws a progress bar (tqdm) on stderr."""
        bar = _Progress(self.job) if progress else None
        for event in self.watch(timeout_s=timeout_s):
            if bar is not None:
                bar.update(event)
        if bar is not None:
            bar.close()
        return self.refresh()


class _Progress:
    def __init__(self, job: tpb.TrainingJob) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=None, unit="step", file=sys.stderr, desc=job.spec.model_name)

    def update(self, event: tpb.TrainingEvent) -> None:
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
