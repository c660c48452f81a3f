"""The generative `gpt` end to end: trained on next-token `addition` through a real cluster
(the docs' spec, fewer epochs), its val_accuracy the exact match of greedy answers to held-out
sums; then served by plain ModelInfer (next-token logits at each row's last position), which a
client-side greedy loop turns into answers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

import maas
from maas.cli.demo import GPT_DEMO
from maas.v1 import training_service_pb2 as tpb
from runtime import gpt_tokens
from runtime.datasets import builtin_dataset, split
from tests.conftest import Cluster, sdk_client_fixture, start_cluster, stop_cluster

pytestmark = pytest.mark.timeout(240)

# The docs train 25 epochs (best 0.983); 15 keep this test near a minute and reach the
# issue's target, 0.95 exact match on held-out sums (0.966 at epoch 15 on the measured run;
# a seeded job on the same torch build and CPU kind repeats that curve exactly).
EPOCHS, TARGET = 15, 0.95
SPEC = {**GPT_DEMO.spec, "model_name": "adder-e2e", "epochs": EPOCHS}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("gpt"), workers=1)
    yield running
    stop_cluster(running)


client = sdk_client_fixture()


@pytest.fixture(scope="module")
def trained(client: maas.Client) -> tpb.TrainingJob:
    started = time.monotonic()
    job = client.train(SPEC).wait(timeout_s=200)
    assert job.state == tpb.TrainingJob.SUCCEEDED, job.error
    curve = [round(e.val_accuracy, 3) for e in job.epochs]
    print(f"\n{job.model_version}: val_accuracy by epoch {curve}, "
          f"{time.monotonic() - started:.1f}s since submit")
    return job


def test_greedy_exact_match_reaches_the_target(trained: tpb.TrainingJob) -> None:
    assert len(trained.epochs) == EPOCHS
    best = max(e.val_accuracy for e in trained.epochs)
    assert best >= TARGET, [e.val_accuracy for e in trained.epochs]
    assert trained.metrics["val_accuracy"] == best  # keep "best": the version is that epoch


def _generate(client: maas.Client, model: str, version: str, prompts: list[list[int]],
              max_new: int) -> list[str]:
    """Greedy answers, one ModelInfer of the whole batch per generated token."""
    rows = [list(p) for p in prompts]
    done = [False] * len(rows)
    for _ in range(max_new):
        width = max(len(r) for r in rows)
        tokens = np.full((len(rows), width), gpt_tokens.PAD, np.int64)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = row
        lengths = np.array([len(r) for r in rows], np.int64)
        logits = client.infer(model, {"tokens": tokens, "lengths": lengths},
                              version=version)["logits"]
        assert logits.shape == (len(rows), gpt_tokens.VOCAB_MIN)
        for i, token in enumerate(logits.argmax(axis=1).tolist()):
            done[i] = done[i] or token == gpt_tokens.EOS
            if not done[i]:
                rows[i].append(token)
    return [gpt_tokens.decode(r[len(p):]) for r, p in zip(rows, prompts, strict=True)]


def test_served_model_adds_held_out_sums(client: maas.Client,
                                         trained: tpb.TrainingJob) -> None:
    data = builtin_dataset("addition")
    _, held_out = split(data.num_samples, 0.2, seed=0)  # the job's validation split
    rows = held_out[:40]
    tokens = data.features[rows].astype(np.int64)
    prompts = [row[:n].tolist() for row, n in zip(tokens, data.labels[rows], strict=True)]
    questions = [gpt_tokens.decode(p) for p in prompts]
    name, _, version = trained.model_version.partition(":")
    answers = _generate(client, name, version, prompts, max_new=4)
    right = [str(sum(int(x) for x in q[:-1].split("+"))) == a
             for q, a in zip(questions, answers, strict=True)]
    print(f"served: {sum(right)}/{len(right)} right, e.g. "
          + ", ".join(f"{q}{a}" for q, a in list(zip(questions, answers, strict=True))[:4]))
    assert sum(right) >= 0.8 * len(right)
