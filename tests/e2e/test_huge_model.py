"""A model over 300 MB through the CLI and the SDK: registered (streamed, resumable),
served, downloaded with `maas models download` and byte-identical; the gateway's memory
stays flat while it takes it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import maas
from maas.cli.main import main as cli_main
from runtime.architectures import get_architecture
from tests.conftest import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
HUGE = {"hidden": [9216, 9216]}  # 85.6 M parameters: 342 MB of F32


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _peak_rss_kib(cluster: Cluster) -> int:
    status = Path(f"/proc/{cluster.service('gateway').pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmHWM:")))


def test_a_300_mb_model_through_cli_and_sdk(cluster: Cluster, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    arch = get_architecture("mlp")
    state = {k: torch.full_like(v, 0.001)
             for k, v in arch.build(arch.resolve_config(HUGE)).state_dict().items()}
    weights = tmp_path / "huge.safetensors"
    save_file(state, str(weights))
    del state
    assert weights.stat().st_size > 300 * 1024 * 1024
    sha = _sha256(weights)
    flags = ["--target", cluster.target, "--json"]
    before = _peak_rss_kib(cluster)
    assert cli_main(["models", "register", "--name", "huge", "--architecture", "mlp",
                     "--config", json.dumps(HUGE), "--weights", str(weights), *flags]) == 0
    registered = json.loads(capsys.readouterr().out)
    grown_mib = (_peak_rss_kib(cluster) - before) / 1024
    assert grown_mib < 64, f"gateway peak RSS grew {grown_mib:.1f} MiB"
    assert registered["weights_sha256"] == sha
    with maas.Client(cluster.target) as client:
        sent: list[int] = []
        version = client.register_model("huge", "mlp", weights, HUGE, progress=sent.append)
        assert sum(sent) == weights.stat().st_size and version.weights_sha256 == sha
        out = client.infer("huge", {"input": np.ones((1, 64), np.float32)}, timeout_s=60)
        assert out["output"].shape == (1, 10)
    assert cli_main(["models", "download", "huge", "--version", version.version,
                     "-o", str(tmp_path / "out"), *flags]) == 0
    downloaded = json.loads(capsys.readouterr().out)
    assert _sha256(Path(downloaded["file"])) == sha
