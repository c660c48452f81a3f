"""Asynchronous inference through the real processes: submit, wait, get, cancel, idempotency."""

from __future__ import annotations

import numpy as np
import pytest

import maas
from maas.client import job_outputs
from maas.errors import FailedPrecondition, IdempotencyKeyReused, InvalidArgument, NotFound
from maas.v1.inference_service_pb2 import InferenceJob
from tests.conftest import Cluster
from tests.models import reference_model, run_reference

pytestmark = pytest.mark.timeout(120)


def test_submit_then_wait_gives_the_in_process_result(cluster: Cluster) -> None:
    x = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    with maas.Client(cluster.target) as client:
        job = client.submit("cnn", {"input": x})
        assert job.job_id.startswith("cnn:") and job.state in (InferenceJob.QUEUED,
                                                               InferenceJob.RUNNING,
                                                               InferenceJob.SUCCEEDED)
        done = client.wait_job(job.job_id, timeout_s=30)
        assert done.state == InferenceJob.SUCCEEDED and done.model_version == "1"
        out = job_outputs(done)["output"]
        assert np.abs(out - run_reference(reference_model("cnn"), x)).max() <= 1e-5
        assert job_outputs(client.get_job(job.job_id))["output"].shape == (3, 10)
        with pytest.raises(FailedPrecondition):
            client.cancel_job(job.job_id)  # already finished


def test_request_id_makes_submit_idempotent(cluster: Cluster) -> None:
    x = np.zeros((1, 64), np.float32)
    with maas.Client(cluster.target) as client:
        first = client.submit("mlp", {"input": x}, request_id="req-42")
        again = client.submit("mlp", {"input": x}, request_id="req-42")
        assert again.job_id == first.job_id
        with pytest.raises(IdempotencyKeyReused):
            client.submit("mlp", {"input": x + 1}, request_id="req-42")
        assert client.wait_job(first.job_id).state == InferenceJob.SUCCEEDED


def test_bad_async_requests(cluster: Cluster) -> None:
    with maas.Client(cluster.target) as client:
        with pytest.raises(InvalidArgument) as bad:
            client.submit("cnn", {"input": np.zeros((1, 64), np.float32)})
        assert any(v.field.startswith("inputs[0].shape") for v in bad.value.violations)
        with pytest.raises(NotFound):
            client.get_job("cnn:" + "0" * 32)
        with pytest.raises(InvalidArgument):
            client.get_job("no-colon-here")
        with pytest.raises(NotFound):
            client.submit("nope", {"input": np.zeros((1, 64), np.float32)})
