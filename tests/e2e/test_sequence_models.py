"""The sequence architectures end to end: `rnn` and `transformer` trained on the built-in
`parity` and `majority` through a real cluster (the demo's specs), then served with
variable-length requests that the worker batches together (padded to the longest)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import maas
from maas.cli.demo import SEQUENCE_DEMOS, SequenceDemo
from maas.v1 import training_service_pb2 as tpb
from runtime.datasets import builtin_dataset
from tests.conftest import Cluster, sdk_client_fixture, start_cluster, stop_cluster

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("sequences"), workers=1)
    yield running
    stop_cluster(running)


client = sdk_client_fixture()


@pytest.fixture(scope="module")
def trained(client: maas.Client) -> dict[str, tpb.TrainingJob]:
    """Both demo models, queued together and trained one after the other (one slot)."""
    started = time.monotonic()
    handles = [(demo, client.train(demo.spec)) for demo in SEQUENCE_DEMOS]
    jobs = {}
    for demo, handle in handles:
        job = handle.wait(timeout_s=180)
        assert job.state == tpb.TrainingJob.SUCCEEDED, job.error
        best = max(e.val_accuracy for e in job.epochs)
        print(f"{job.model_version}: best val_accuracy {best:.3f} (target "
              f">= {demo.target_accuracy}), {time.monotonic() - started:.1f}s since submit")
        jobs[demo.spec["architecture"]] = job
    return jobs


@pytest.mark.parametrize("demo", SEQUENCE_DEMOS, ids=lambda d: d.spec["architecture"])
def test_trains_well_above_chance(trained: dict[str, tpb.TrainingJob],
                                  demo: SequenceDemo) -> None:
    job = trained[demo.spec["architecture"]]
    best = max(e.val_accuracy for e in job.epochs)
    chance = 1 / demo.spec["config"]["num_classes"]
    assert best >= max(0.8, chance + 0.3), f"{job.model_version}: {best:.3f}"


def _requests(dataset: str, count: int) -> list[dict[str, np.ndarray]]:
    """`count` requests of 1-3 validation-style samples each, cut to their own longest."""
    data = builtin_dataset(dataset)
    assert data.lengths is not None
    rng = np.random.default_rng(7)
    found = []
    for _ in range(count):
        rows = rng.choice(len(data.labels), int(rng.integers(1, 4)), replace=False)
        lengths = data.lengths[rows]
        found.append({"tokens": data.features[rows, : int(lengths.max())].astype(np.int64),
                      "lengths": lengths})
    return found


@pytest.mark.parametrize("demo", SEQUENCE_DEMOS, ids=lambda d: d.spec["architecture"])
def test_variable_length_batches_match_each_request_alone(
        client: maas.Client, cluster: Cluster, trained: dict[str, tpb.TrainingJob],
        demo: SequenceDemo) -> None:
    name, _, version = trained[demo.spec["architecture"]].model_version.partition(":")
    requests = _requests(demo.spec["dataset"], 24)
    alone = [client.infer(name, r, version=version)["logits"] for r in requests]
    with maas.Client(cluster.target, timeout_s=60) as other, ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda r: other.infer(name, r, version=version)["logits"],
                                 requests))
    for r, one, many in zip(requests, alone, together, strict=True):
        assert one.shape == many.shape == (len(r["lengths"]), demo.spec["config"]["num_classes"])
        assert np.abs(one - many).max() <= 1e-5
    # Padding a request further (any value, within max_len) changes nothing either.
    shortest = min(range(len(requests)), key=lambda i: requests[i]["tokens"].shape[1])
    padded = np.pad(requests[shortest]["tokens"], ((0, 0), (0, 3)), constant_values=1)
    logits = client.infer(name, {"tokens": padded, "lengths": requests[shortest]["lengths"]},
                          version=version)["logits"]
    assert np.abs(logits - alone[shortest]).max() <= 1e-5


def test_bad_sequences_are_invalid_argument(client: maas.Client,
                                            trained: dict[str, tpb.TrainingJob]) -> None:
    name, _, version = trained["transformer"].model_version.partition(":")
    tokens = np.ones((2, 4), np.int64)
    for lengths, field in ((np.array([4]), "inputs[1].shape[0]"),
                           (np.array([4, 5]), "inputs[1]")):
        with pytest.raises(maas.InvalidArgument) as caught:
            client.infer(name, {"tokens": tokens, "lengths": lengths}, version=version)
        assert [v.field for v in caught.value.violations] == [field]
    with pytest.raises(maas.InvalidArgument) as caught:
        client.infer(name, {"tokens": tokens * 16, "lengths": np.array([4, 4])},
                     version=version)
    assert "vocab_size" in caught.value.message
