"""The base install is a light SDK: a fresh virtual environment with only `pip install <repo>`
(no extras: no redis, uvloop, prometheus-client, boto3, torch) runs the SDK and the CLI's
client commands against a real cluster, and `maas up` there names the extra it needs.

The environment is built (PyPI, or pip's cache) while the cluster starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
# What the wheel is built from: a copy, so the build writes nothing into the checkout.
SOURCES = ("pyproject.toml", "README.md", "maas", "runtime", "scheduler", "gateway", "worker")
INSTALL_TIMEOUT_S = 180

SDK_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    import numpy as np
    import maas
    from maas.v1.inference_service_pb2 import InferenceJob

    target = sys.argv[1]
    x = np.zeros((1, 64), np.float32)
    with maas.Client(target) as client:
        out = client.infer("mlp", {"input": x})["output"]
        names = sorted(m.name for m in client.list_models())
        job = client.wait_job(client.submit("mlp", {"input": x}).job_id)

    async def async_calls():
        async with maas.AsyncClient(target) as client:
            out = (await client.infer("mlp", {"input": x}))["output"]
            return out.shape, sorted(m.name for m in await client.list_models())

    async_shape, async_names = asyncio.run(async_calls())
    print(json.dumps({"shape": list(out.shape), "models": names,
                      "job_state": InferenceJob.State.Name(job.state),
                      "async_shape": list(async_shape), "async_models": async_names,
                      "loaded": [m for m in ("redis", "uvloop", "prometheus_client", "boto3",
                                             "torch") if m in sys.modules]}))
""")


def light_env() -> dict[str, str]:
    """The environment of the light venv's processes: nothing of this checkout on the path."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MAAS_TARGET", "MAAS_API_KEY")}


@dataclass
class LightVenv:
    path: Path
    build: subprocess.Popen[str]


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LightVenv]:
    """Starts building the venv (the test waits for it, after the cluster started)."""
    tmp = tmp_path_factory.mktemp("light")
    (tmp / "src").mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tmp / "src" / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(ROOT / name, tmp / "src" / name)
    venv = tmp / "venv"
    script = (f"{sys.executable} -m venv {venv} && {venv}/bin/python -m pip install -q "
              f"--disable-pip-version-check {tmp / 'src'}")
    build = subprocess.Popen(["bash", "-c", script], cwd=tmp, env=light_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield LightVenv(venv, build)
    if build.poll() is None:
        build.kill()
        build.wait()


def run(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=venv,
                          env=light_env(), capture_output=True, text=True, timeout=60)


def test_the_base_install_is_a_working_sdk_and_cli(light_venv: LightVenv,
                                                     cluster: Cluster) -> None:
    output, _ = light_venv.build.communicate(timeout=INSTALL_TIMEOUT_S)
    assert light_venv.build.returncode == 0, output
    venv = light_venv.path

    not_there = run(venv, "python", "-c", "import redis")
    assert not_there.returncode != 0 and "No module named 'redis'" in not_there.stderr
    where = run(venv, "python", "-c", "import maas; print(maas.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout  # the installed one, not ROOT's

    sdk = run(venv, "python", "-c", SDK_SCRIPT, cluster.target)
    assert sdk.returncode == 0, sdk.stderr
    doc = json.loads(sdk.stdout)
    assert doc["shape"] == doc["async_shape"] == [1, 10]
    assert {"mlp", "cnn"} <= set(doc["models"]) and doc["async_models"] == doc["models"]
    assert doc["job_state"] == "SUCCEEDED" and doc["loaded"] == []

    infer = run(venv, "maas", "infer", "mlp", "--target", cluster.target, "--json")
    assert infer.returncode == 0, infer.stderr
    assert json.loads(infer.stdout)["outputs"]["output"]["shape"] == [1, 10]
    listed = run(venv, "maas", "models", "list", "--target", cluster.target, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {"mlp", "cnn"} <= {m["name"] for m in json.loads(listed.stdout)["models"]}

    up = run(venv, "maas", "up", "--no-demo")
    assert up.returncode == 2 and "Traceback" not in up.stderr, up.stderr
    assert up.stderr.startswith("maas up needs the server parts: "
                                "pip install 'maas-cluster[server,worker]'"), up.stderr
    assert "redis" in up.stderr
