"""The Node.js examples (examples/node) against a real cluster: their outputs equal the Python
SDK's bit for bit, and the errors they decode carry the gateway's reason and field violations.

Node and npm are required (CI has them): a missing one fails the test, never skips it.
`npm ci` runs when examples/node/node_modules is missing; the static example's stubs are
generated here (`npm run generate`), so they always match protos/.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import maas
from tests.conftest import Cluster, start_cluster, stop_cluster

pytestmark = pytest.mark.timeout(300)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "node"
NODE_TIMEOUT_S = 60


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:  # CI machines have node 20+: a missing one is a failure, not a skip
        pytest.fail(f"`{name}` is not on PATH; install Node.js 20+ (node and npm) to run "
                    "examples/node")
    return found


def run(command: list[str], timeout_s: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=EXAMPLES, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {done.returncode}\n--- stdout\n"
                    f"{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}")
    return done.stdout


@pytest.fixture(scope="module")
def node() -> str:
    """node, with the examples' packages installed and the static stubs generated."""
    node, npm = tool("node"), tool("npm")
    if not (EXAMPLES / "node_modules").is_dir():
        run([npm, "ci", "--no-audit", "--no-fund"], timeout_s=300)
    run([npm, "run", "--silent", "generate"], timeout_s=120)
    return node


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("node"), workers=1)
    yield running
    stop_cluster(running)


def run_example(node: str, cluster: Cluster, script: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "MAAS_TARGET": cluster.target}
    out = run([node, script, *args], timeout_s=NODE_TIMEOUT_S, env=env)
    result: dict[str, Any] = json.loads(out)
    return result


def example_input(rows: int) -> np.ndarray:
    """examples/node/lib/float32.js `exampleInput`: ((i * 37) % 101) / 100 - 0.5 as float32."""
    values = [((i * 37) % 101) / 100 - 0.5 for i in range(rows * 64)]
    return np.array(values, dtype=np.float64).astype(np.float32).reshape(rows, 64)


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype="<f4").view("<u4")


def assert_same_as_sdk(result: dict[str, Any], cluster: Cluster, model: str,
                       version: str = "") -> None:
    """The example's input is the reference input and its outputs are the SDK's, bit for bit
    (both the raw bytes and the JSON numbers)."""
    x = example_input(3)
    sent = np.array(result["input"]["data"], dtype=np.float32).reshape(result["input"]["shape"])
    assert np.array_equal(bits(sent), bits(x))
    with maas.Client(cluster.target, timeout_s=30) as client:
        expected = client.infer(model, {"input": x}, version=version)
    assert set(result["outputs"]) == set(expected) == {"output"}
    got = result["outputs"]["output"]
    want = expected["output"]
    assert got["datatype"] == "FP32" and got["shape"] == list(want.shape) == [3, 10]
    raw = np.frombuffer(base64.b64decode(got["raw_base64"]), dtype="<f4").reshape(want.shape)
    assert np.array_equal(bits(raw), bits(want))
    numbers = np.array(got["data"], dtype=np.float64).astype(np.float32).reshape(want.shape)
    assert np.array_equal(bits(numbers), bits(want))


def assert_wrong_shape(error: dict[str, Any]) -> None:
    assert error["code"] == 3  # INVALID_ARGUMENT
    assert error["reason"] == "INVALID_ARGUMENT" and error["domain"] == "maas.dev"
    fields = [v["field"] for v in error["field_violations"]]
    assert fields == ["inputs[0].shape[1]"], error
    assert "63" in error["field_violations"][0]["description"]


def test_dynamic_infer_equals_sdk_and_decodes_errors(node: str, cluster: Cluster) -> None:
    result = run_example(node, cluster, "dynamic/infer.js")
    assert result["model"] == "mlp" and result["version"] == "1"
    assert_same_as_sdk(result, cluster, "mlp")
    assert_wrong_shape(result["errors"]["wrong_shape"])
    unknown = result["errors"]["unknown_model"]
    assert unknown["code"] == 5 and unknown["code_name"] == "NOT_FOUND"
    assert unknown["reason"] == "MODEL_NOT_FOUND" and "no-such-model" in unknown["message"]


def test_static_stubs_infer_equals_sdk_and_decode_errors(node: str, cluster: Cluster) -> None:
    result = run_example(node, cluster, "static/infer.js")
    assert result["model"] == "mlp" and result["version"] == "1"
    assert_same_as_sdk(result, cluster, "mlp")
    assert_wrong_shape(result["errors"]["wrong_shape"])


def test_dynamic_training_then_infer_on_the_result(node: str, cluster: Cluster) -> None:
    """A 5-step job on digits, watched to its end; the version it made serves the same
    outputs to Node as to the SDK."""
    result = run_example(node, cluster, "dynamic/train.js", "node-digits-mlp")
    assert result["state"] == "SUCCEEDED"
    assert result["states"] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    model, _, version = result["model_version"].partition(":")
    assert model == "node-digits-mlp" and version
    assert_same_as_sdk(result, cluster, model, version)
