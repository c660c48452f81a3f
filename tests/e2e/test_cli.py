"""The CLI's client commands against a running cluster, as a user types them (--json)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np

import maas
from tests.conftest import Cluster

MAAS = [sys.executable, "-m", "maas.cli.main"]


def cli(cluster: Cluster, *args: str) -> Any:
    done = subprocess.run([*MAAS, *args, "--target", cluster.target, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_infer_models_and_async_jobs_from_the_cli(cluster: Cluster) -> None:
    assert cli(cluster, "infer", "mlp")["outputs"]["output"]["shape"] == [1, 10]
    names = {m["name"] for m in cli(cluster, "models", "list")["models"]}
    assert {"mlp", "cnn"} <= names
    with maas.Client(cluster.target) as client:
        job = client.submit("mlp", {"input": np.zeros((1, 64), np.float32)})
    doc = cli(cluster, "jobs", "watch", job.job_id)  # an inference job id: <model>:<hex>
    assert doc["state"] == "SUCCEEDED" and doc["job_id"] == job.job_id
    assert cli(cluster, "jobs", "get", job.job_id)["outputs"][0]["shape"] == ["1", "10"]


def test_dead_letter_commands(cluster: Cluster) -> None:
    assert cli(cluster, "jobs", "dlq", "cnn") == {"dead_letters": []}
    assert cli(cluster, "jobs", "redrive", "cnn") == {"redriven": []}


def test_cli_errors_are_one_line_not_a_traceback(cluster: Cluster) -> None:
    done = subprocess.run([*MAAS, "infer", "nope", "--target", cluster.target],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("maas: NOT_FOUND") and "Traceback" not in done.stderr
