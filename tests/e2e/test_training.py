"""Training end to end through the real processes: train to a target and serve the result,
the watch stream, cancellation, validation at the door, and dataset uploads.

One cluster with a single worker serves the whole module: the worker has one training slot,
so a second job stays queued while the first runs (what the queued-cancel test needs).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import maas
from maas import errors
from maas.training_client import TERMINAL, TrainingJobHandle
from maas.v1 import dataset_service_pb2 as dpb
from maas.v1 import training_service_pb2 as tpb
from maas.v1.dataset_service_pb2_grpc import DatasetServiceStub
from runtime.datasets import builtin_dataset, dataset_sha256, present, split
from tests.conftest import Cluster, sdk_client_fixture, start_cluster, stop_cluster
from tests.models import run_registered

pytestmark = pytest.mark.timeout(180)

Job = tpb.TrainingJob
WATCH_TIMEOUT_S = 120.0
# The seed CNN on digits: SGD with momentum reaches >= 0.95 validation accuracy in 5 epochs.
DIGITS_CNN: dict[str, Any] = {"architecture": "cnn", "dataset": "digits", "optimizer": "sgd",
                              "lr": 0.02, "batch_size": 16, "momentum": 0.9, "epochs": 5,
                              "keep": "best", "seed": 0}
DIGITS_STEPS = 5 * 90  # 1,438 training samples in batches of 16: 90 steps an epoch
# A job that runs far longer than any test waits: it is always cancelled.
LONG_CNN: dict[str, Any] = {**DIGITS_CNN, "epochs": 500, "keep": "last"}
# A job that ends quickly.
SHORT_MLP: dict[str, Any] = {"architecture": "mlp", "dataset": "digits", "optimizer": "adam",
                             "lr": 0.003, "batch_size": 32, "epochs": 0, "max_steps": 5}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("training"), workers=1)
    yield running
    stop_cluster(running)


client = sdk_client_fixture()


def artifacts(cluster: Cluster) -> Path:
    return cluster.local.data_dir / "artifacts"


def kind(event: tpb.TrainingEvent) -> str:
    return event.WhichOneof("event") or ""


def states(events: list[tpb.TrainingEvent]) -> list[str]:
    return [Job.State.Name(e.state) for e in events if kind(e) == "state"]


def watch_all(handle: TrainingJobHandle, after_sequence: int = 0,
              ) -> list[tpb.TrainingEvent]:
    return list(handle.watch(after_sequence=after_sequence, timeout_s=WATCH_TIMEOUT_S))


def wait_for_event(events: Iterator[tpb.TrainingEvent], wanted: str) -> tpb.TrainingEvent:
    for event in events:
        if kind(event) == wanted:
            return event
        assert not (kind(event) == "state" and event.state in TERMINAL), (
            f"the job ended ({Job.State.Name(event.state)}: {event.message}) before a "
            f"{wanted} event")
    raise AssertionError(f"the watch ended before a {wanted} event")


def write_npz(path: Path, features: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, features=features, labels=labels)
    return path


@dataclass
class Trained:
    job: Job
    events: list[tpb.TrainingEvent]
    elapsed_s: float


@pytest.fixture(scope="module")
def trained(client: maas.Client) -> Trained:
    """The seed CNN trained on digits through the cluster, followed by its watch stream."""
    started = time.monotonic()
    handle = client.train({"name": "digits-cnn", **DIGITS_CNN})
    events = watch_all(handle)
    elapsed_s = time.monotonic() - started
    job = handle.refresh()
    assert job.state == Job.SUCCEEDED, job.error
    best = max(e.val_accuracy for e in job.epochs)
    print(f"trained digits-cnn in {elapsed_s:.1f}s: best val_accuracy {best:.4f}, "
          f"{job.metrics['samples_per_second']:.0f} samples/s")
    return Trained(job, events, elapsed_s)


# ---- 1. train to a target, serve the result --------------------------------------------


def test_training_reaches_target_accuracy(trained: Trained) -> None:
    job = trained.job
    assert job.attempts == 1
    assert [e.epoch for e in job.epochs] == [1, 2, 3, 4, 5]
    best = max(job.epochs, key=lambda e: (e.val_accuracy, -e.val_loss))
    assert best.val_accuracy >= 0.95
    for epoch in job.epochs:
        assert epoch.train_loss > 0 and epoch.val_loss > 0 and 0 < epoch.val_accuracy <= 1
        assert epoch.samples_per_second > 0
    assert job.epochs[-1].train_loss < job.epochs[0].train_loss
    assert set(job.metrics) >= {"train_loss", "val_loss", "val_accuracy", "samples_per_second"}
    # keep="best": the job's metrics are those of the kept (best) epoch.
    assert job.metrics["val_accuracy"] == pytest.approx(best.val_accuracy)
    assert job.metrics["val_loss"] == pytest.approx(best.val_loss)


def test_finished_job_fields(client: maas.Client, trained: Trained) -> None:
    job = client.training_job(trained.job.job_id).job
    assert job.state == Job.SUCCEEDED and job.error == ""
    assert job.model_version == "digits-cnn:1"
    assert job.spec.model_name == "digits-cnn" and job.spec.architecture == "cnn"
    assert job.spec.dataset == "digits" and job.spec.keep == "best"
    assert job.spec.lr == pytest.approx(0.02) and job.spec.batch_size == 16
    assert job.create_time.ToNanoseconds() <= job.start_time.ToNanoseconds()
    assert job.start_time.ToNanoseconds() < job.end_time.ToNanoseconds()
    assert job.latest_checkpoint.global_step == DIGITS_STEPS
    assert job.progress.global_step == DIGITS_STEPS
    assert job.job_id in [j.job_id for j in client.list_training_jobs()]


def test_model_version_lineage(client: maas.Client, trained: Trained) -> None:
    version = client.get_model("digits-cnn").versions[0]
    assert version.version == "1" and version.architecture == "cnn"
    assert version.training_job_id == trained.job.job_id
    assert version.metrics["val_accuracy"] == pytest.approx(trained.job.metrics["val_accuracy"])
    assert set(version.metrics) >= {"train_loss", "val_loss", "val_accuracy"}
    spec = json.loads(version.training_spec_json)
    assert spec["architecture"] == "cnn" and spec["dataset"] == "digits"
    assert version.dataset_sha256 == trained.job.dataset_sha256


def test_builtin_dataset_sha256_in_lineage(client: maas.Client, trained: Trained) -> None:
    """The job and its model version name the sha256 of the digits arrays, as GetDataset does."""
    expected = dataset_sha256(builtin_dataset("digits"))
    assert client.get_dataset("digits").sha256 == expected
    assert trained.job.dataset_sha256 == expected
    assert client.get_model("digits-cnn").versions[0].dataset_sha256 == expected


def reference_outputs(cluster: Cluster, client: maas.Client, x: np.ndarray) -> np.ndarray:
    """The registered weights run in-process, as the worker should run them."""
    version = client.get_model("digits-cnn").versions[0]
    path = artifacts(cluster) / "weights" / f"{version.weights_sha256}.safetensors"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == version.weights_sha256
    return run_registered(version, artifacts(cluster), "cnn", x)


def test_trained_version_serves_through_triton_and_sdk(cluster: Cluster, client: maas.Client,
                                                       trained: Trained) -> None:
    digits = present(builtin_dataset("digits"), (-1, 1, 28, 28))
    _, val_idx = split(digits.num_samples, 0.2, seed=0)  # samples the job never trained on
    x, y = digits.features[val_idx[:64]], digits.labels[val_idx[:64]]
    expected = reference_outputs(cluster, client, x)

    triton = grpcclient.InferenceServerClient(cluster.target)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    via_triton = triton.infer("digits-cnn", [inp], model_version="1",
                              client_timeout=60).as_numpy("output")
    via_sdk = client.infer("digits-cnn", {"input": x}, version="1")["output"]

    for out in (via_triton, via_sdk):
        assert out.shape == (64, 10)
        assert np.abs(out - expected).max() <= 1e-5
        accuracy = float((out.argmax(axis=1) == y).mean())
        assert accuracy >= 0.9, accuracy
    print(f"served digits-cnn:1: {float((via_sdk.argmax(axis=1) == y).mean()):.3f} right "
          f"on 64 held-out digits")


# ---- 2. the watch stream ---------------------------------------------------------------


def test_watch_stream_is_ordered_and_complete(trained: Trained) -> None:
    events = trained.events
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert states(events) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert kind(events[0]) == "state" and events[0].state == Job.QUEUED
    assert kind(events[1]) == "state" and events[1].state == Job.RUNNING
    assert kind(events[-1]) == "state" and events[-1].state == Job.SUCCEEDED
    kinds = [kind(e) for e in events]
    assert {"progress", "epoch", "checkpoint"} <= set(kinds)
    assert kinds.count("epoch") == 5
    assert kinds.index("model_version") == len(events) - 2
    assert events[-2].model_version == trained.job.model_version == "digits-cnn:1"
    steps = [e.progress.global_step for e in events if kind(e) == "progress"]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    times = [e.time.ToNanoseconds() for e in events]
    assert times == sorted(times)


def test_progress_events_carry_total_steps(trained: Trained) -> None:
    """A progress bar needs the total: every progress event says how many steps the job runs."""
    progress = [e.progress for e in trained.events if kind(e) == "progress"]
    assert progress
    assert {p.total_steps for p in progress} == {DIGITS_STEPS}
    assert trained.job.progress.total_steps == DIGITS_STEPS


def test_watch_resumes_after_a_sequence(client: maas.Client, trained: Trained) -> None:
    handle = client.training_job(trained.job.job_id)
    for k in (0, 1, len(trained.events) // 2, len(trained.events) - 1):
        resumed = watch_all(handle, after_sequence=k)
        assert resumed == trained.events[k:]


# ---- 3. cancellation -------------------------------------------------------------------


def test_cancel_running_job_stops_within_seconds(client: maas.Client) -> None:
    handle = client.train({"name": "cancel-running", **LONG_CNN})
    events = handle.watch(timeout_s=WATCH_TIMEOUT_S)
    wait_for_event(events, "progress")
    asked = time.monotonic()
    assert handle.cancel().state in (Job.CANCELLING, Job.CANCELLED)
    rest = list(events)  # the same watch ends on its own
    stopped_s = time.monotonic() - asked
    print(f"running job cancelled in {stopped_s:.2f}s")
    assert stopped_s < 5
    assert kind(rest[-1]) == "state" and rest[-1].state == Job.CANCELLED
    assert "CANCELLING" in states(rest)
    job = handle.refresh()
    assert job.state == Job.CANCELLED and job.attempts == 1 and job.model_version == ""
    assert job.error


def test_cancel_queued_job_never_runs(client: maas.Client) -> None:
    blocker = client.train({"name": "cancel-blocker", **LONG_CNN})
    wait_for_event(blocker.watch(timeout_s=WATCH_TIMEOUT_S), "progress")
    queued = client.train({"name": "cancel-queued", **SHORT_MLP})
    assert queued.refresh().state == Job.QUEUED  # the only worker is busy
    job = queued.cancel()
    assert job.state == Job.CANCELLED and job.attempts == 0
    assert states(watch_all(queued)) == ["QUEUED", "CANCELLED"]
    # Free the worker; the cancelled job must still never start.
    blocker.cancel()
    assert states(watch_all(blocker))[-1] == "CANCELLED"
    short = client.train({"name": "cancel-after", **SHORT_MLP})
    assert short.wait(timeout_s=WATCH_TIMEOUT_S).state == Job.SUCCEEDED  # the worker is free
    job = queued.refresh()
    assert job.state == Job.CANCELLED and job.attempts == 0 and not job.start_time.seconds
    assert states(watch_all(queued)) == ["QUEUED", "CANCELLED"]


def test_cancelling_a_cancelled_job_is_failed_precondition(client: maas.Client) -> None:
    """CANCELLED is an end state: the contract makes a second cancel FAILED_PRECONDITION."""
    handle = client.train({"name": "cancel-twice", **LONG_CNN})
    handle.cancel()
    assert states(watch_all(handle))[-1] == "CANCELLED"
    with pytest.raises(errors.FailedPrecondition):
        handle.cancel()


def test_cancel_finished_job_is_failed_precondition(client: maas.Client,
                                                    trained: Trained) -> None:
    with pytest.raises(errors.FailedPrecondition) as caught:
        client.training_job(trained.job.job_id).cancel()
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert client.training_job(trained.job.job_id).job.state == Job.SUCCEEDED


def test_unknown_job_is_not_found(client: maas.Client) -> None:
    with pytest.raises(errors.NotFound):
        client.training_job("no-such-job")
    with pytest.raises(errors.NotFound):
        client.training_job("no-such-job").cancel()


def test_finished_job_reports_its_last_step(client: maas.Client) -> None:
    """`jobs get` of a finished job shows where it ended, not the last 10-step progress mark."""
    job = client.train({"name": "last-step", **SHORT_MLP, "max_steps": 12}).wait(
        timeout_s=WATCH_TIMEOUT_S)
    assert job.state == Job.SUCCEEDED, job.error
    assert job.latest_checkpoint.global_step == 12
    assert job.progress.global_step == 12


# ---- 4. validation at the door ---------------------------------------------------------


@pytest.fixture(scope="module")
def bad_datasets(client: maas.Client, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Uploaded datasets that do not fit: labels beyond 9, and features of the wrong shape."""
    tmp = tmp_path_factory.mktemp("bad-datasets")
    rng = np.random.default_rng(0)
    labels = np.arange(40, dtype=np.int64) % 13  # 0..12
    client.upload_dataset(write_npz(tmp / "l.npz", rng.random((40, 8, 8), np.float32), labels),
                          "labels-to-12")
    small = np.arange(40, dtype=np.int64) % 10
    client.upload_dataset(write_npz(tmp / "s.npz", rng.random((40, 5, 7), np.float32), small),
                          "shape-5x7")
    client.upload_dataset(write_npz(tmp / "c.npz", rng.random((40, 3, 5, 7), np.float32), small),
                          "shape-3x5x7")


BAD_SPECS = [
    pytest.param({"architecture": "resnet"}, "spec.architecture", id="unknown-architecture"),
    pytest.param({"dataset": "no-such-dataset"}, "spec.dataset", id="unknown-dataset"),
    pytest.param({"lr": -0.1}, "spec.lr", id="negative-lr"),
    pytest.param({"batch_size": 0}, "spec.batch_size", id="zero-batch-size"),
    pytest.param({"dataset": "labels-to-12"}, "spec.dataset.labels", id="label-out-of-range"),
    pytest.param({"architecture": "mlp", "dataset": "shape-5x7"}, "spec.dataset",
                 id="feature-shape-mlp"),
    pytest.param({"dataset": "shape-3x5x7"}, "spec.dataset", id="feature-shape-cnn"),
    pytest.param({"name": "bad name!"}, "spec.model_name", id="bad-model-name"),
    pytest.param({"optimizer": "lbfgs"}, "spec.optimizer", id="unknown-optimizer"),
    pytest.param({"config": {"num_classes": 10, "depth": 3}}, "spec.config.depth",
                 id="unknown-config-key"),
]


@pytest.mark.usefixtures("bad_datasets")
@pytest.mark.parametrize(("change", "field"), BAD_SPECS)
def test_bad_spec_rejected_at_create(client: maas.Client, change: dict[str, Any],
                                     field: str) -> None:
    before = len(client.list_training_jobs(page_size=1000))
    spec = {"name": "bad-spec", **SHORT_MLP, "architecture": "cnn", **change}
    with pytest.raises(errors.InvalidArgument) as caught:
        client.train(spec)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in caught.value.violations]
    assert field in fields, (fields, caught.value.message)
    assert len(client.list_training_jobs(page_size=1000)) == before  # nothing was queued


def test_every_bad_field_is_reported_at_once(client: maas.Client) -> None:
    spec = {"name": "bad-spec", **SHORT_MLP, "lr": -1.0, "batch_size": 0, "momentum": 2.0}
    with pytest.raises(errors.InvalidArgument) as caught:
        client.train(spec)
    fields = {v.field for v in caught.value.violations}
    assert fields >= {"spec.lr", "spec.batch_size", "spec.momentum"}


def test_request_id_is_idempotent(client: maas.Client) -> None:
    spec = {"name": "idempotent", **SHORT_MLP}
    first = client.train(spec, request_id="train-once")
    again = client.train(spec, request_id="train-once")
    assert again.id == first.id
    with pytest.raises(errors.FailedPrecondition) as caught:
        client.train({**spec, "lr": 0.01}, request_id="train-once")
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert first.wait(timeout_s=WATCH_TIMEOUT_S).state == Job.SUCCEEDED
    assert client.train(spec, request_id="train-once").id == first.id  # also once finished
    assert [v.version for v in client.get_model("idempotent").versions] == ["1"]


# ---- 5. datasets -----------------------------------------------------------------------


def digits_npz(path: Path, count: int) -> Path:
    digits = builtin_dataset("digits")
    return write_npz(path, digits.features[:count], digits.labels[:count])


def test_upload_then_train_then_delete(client: maas.Client, tmp_path: Path) -> None:
    path = digits_npz(tmp_path / "my-digits.npz", 600)
    data = path.read_bytes()
    uploaded = client.upload_dataset(path, "my-digits")
    assert uploaded.name == "my-digits" and uploaded.format == "npz"
    assert uploaded.sha256 == hashlib.sha256(data).hexdigest()
    assert uploaded.size_bytes == len(data)
    assert uploaded.num_samples == 600 and list(uploaded.feature_shape) == [8, 8]
    assert uploaded.num_classes == 10
    assert client.get_dataset("my-digits") == uploaded
    assert {"digits", "my-digits"} <= {d.name for d in client.list_datasets()}

    for arch, config in (("mlp", {"hidden": [32]}), ("cnn", {})):
        handle = client.train({"name": f"my-digits-{arch}", "architecture": arch,
                               "config": config, "dataset": "my-digits", "epochs": 0,
                               "max_steps": 12, "batch_size": 32, "lr": 0.01,
                               "checkpoint_every": 5})
        job = handle.wait(timeout_s=WATCH_TIMEOUT_S)
        assert job.state == Job.SUCCEEDED, job.error
        assert job.latest_checkpoint.global_step == 12
        assert job.dataset_sha256 == uploaded.sha256
        version = client.get_model(f"my-digits-{arch}").versions[0]
        assert version.dataset_sha256 == uploaded.sha256
        assert version.training_job_id == job.job_id

    client.delete_dataset("my-digits")
    with pytest.raises(errors.NotFound):
        client.get_dataset("my-digits")
    assert "my-digits" not in {d.name for d in client.list_datasets()}
    with pytest.raises(errors.NotFound):
        client.delete_dataset("my-digits")
    with pytest.raises(errors.InvalidArgument):
        client.delete_dataset("digits")
    with pytest.raises(errors.InvalidArgument) as caught:
        client.train({"name": "gone", **SHORT_MLP, "dataset": "my-digits"})
    assert "spec.dataset" in [v.field for v in caught.value.violations]


def upload_parts(path: Path, name: str, chunk_bytes: int = 16 * 1024,
                 sha256: str | None = None) -> list[dpb.UploadDatasetRequest]:
    data = path.read_bytes()
    header = dpb.UploadDatasetHeader(name=name, format="npz", size_bytes=len(data),
                                     sha256=sha256 or hashlib.sha256(data).hexdigest())
    chunks = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
    return [dpb.UploadDatasetRequest(header=header),
            *(dpb.UploadDatasetRequest(chunk=c) for c in chunks)]


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def store_files(cluster: Cluster) -> tuple[set[str], set[str]]:
    """Files of the dataset store and of the gateway's upload spool."""
    return (files_under(artifacts(cluster) / "datasets"),
            files_under(artifacts(cluster) / "uploads"))


def assert_nothing_left(cluster: Cluster, client: maas.Client, name: str,
                        before: tuple[set[str], set[str]]) -> None:
    """Not registered, no new file in the dataset store, and no new file left in the spool."""
    with pytest.raises(errors.NotFound):
        client.get_dataset(name)
    assert name not in {d.name for d in client.list_datasets()}
    deadline = time.monotonic() + 5  # the servicer's clean-up runs as its call winds down
    while store_files(cluster) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    datasets, spool = store_files(cluster)
    assert datasets == before[0]
    assert spool - before[1] == set(), "a partial upload was left in the spool"


@pytest.fixture
def upload_stub(cluster: Cluster) -> Iterator[DatasetServiceStub]:
    with grpc.insecure_channel(cluster.target) as channel:
        yield DatasetServiceStub(channel)


@pytest.fixture
def big_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    return write_npz(tmp_path / "big.npz", rng.random((1000, 8, 8), np.float32),
                     rng.integers(0, 10, 1000))


def test_upload_that_raises_midway_registers_nothing(
        cluster: Cluster, client: maas.Client, upload_stub: DatasetServiceStub,
        big_npz: Path) -> None:
    before = store_files(cluster)
    parts = upload_parts(big_npz, "broken-upload")
    assert len(parts) > 10

    def requests() -> Iterator[dpb.UploadDatasetRequest]:
        yield from parts[: len(parts) // 2]
        raise ConnectionResetError("the client lost its file")

    with pytest.raises(grpc.RpcError) as caught:
        upload_stub.UploadDataset(requests(), timeout=30)
    assert caught.value.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED)
    assert_nothing_left(cluster, client, "broken-upload", before)


def test_upload_cancelled_midway_registers_nothing(
        cluster: Cluster, client: maas.Client, upload_stub: DatasetServiceStub,
        big_npz: Path) -> None:
    before = store_files(cluster)
    parts = upload_parts(big_npz, "cancelled-upload")
    half_sent, release = threading.Event(), threading.Event()

    def requests() -> Iterator[dpb.UploadDatasetRequest]:
        yield from parts[: len(parts) // 2]
        half_sent.set()
        release.wait(30)  # the rest never goes out: the call is cancelled meanwhile

    call = upload_stub.UploadDataset.future(requests(), timeout=30)
    try:
        assert half_sent.wait(10)
        time.sleep(0.3)  # let the gateway spool what was sent
        assert call.cancel()
    finally:
        release.set()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()
    assert_nothing_left(cluster, client, "cancelled-upload", before)


def test_truncated_upload_is_invalid_and_registers_nothing(
        cluster: Cluster, client: maas.Client, upload_stub: DatasetServiceStub,
        big_npz: Path) -> None:
    before = store_files(cluster)
    parts = upload_parts(big_npz, "truncated-upload")
    with pytest.raises(grpc.RpcError) as caught:
        upload_stub.UploadDataset(iter(parts[: len(parts) // 2]), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_nothing_left(cluster, client, "truncated-upload", before)


def test_wrong_sha256_is_invalid_and_registers_nothing(
        cluster: Cluster, client: maas.Client, upload_stub: DatasetServiceStub,
        big_npz: Path) -> None:
    before = store_files(cluster)
    parts = upload_parts(big_npz, "wrong-sha", sha256="0" * 64)
    try:
        upload_stub.UploadDataset(iter(parts), timeout=30)
    except grpc.RpcError as err:
        failure = maas.client.from_rpc_error(err)
    else:
        pytest.fail("an upload with the wrong sha256 was accepted")
    assert isinstance(failure, errors.InvalidArgument)
    assert "header.sha256" in [v.field for v in failure.violations]
    assert_nothing_left(cluster, client, "wrong-sha", before)
