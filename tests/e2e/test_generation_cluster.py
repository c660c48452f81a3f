"""Generation through the real processes (`maas up`'s scheduler, gateway, workers): `maas
generate` in its own process prints the tokens as the SDK streams them, and a bad request
is one line naming the field."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import save

import maas
from runtime.gpt_nn import GPT
from tests.conftest import Cluster

MAAS = [sys.executable, "-m", "maas.cli.main"]
CONFIG = {"d_model": 32, "heads": 4, "layers": 2, "ff": 64, "max_len": 64}


def test_maas_generate_prints_the_streamed_tokens(cluster: Cluster) -> None:
    torch.manual_seed(0)
    weights = save(GPT(259, 32, 4, 2, 64, 64).state_dict())
    with maas.Client(cluster.target, timeout_s=30) as client:
        client.register_model("gen", "gpt", weights, CONFIG)
        chunks = list(client.generate("gen", "17+25=", max_tokens=8))
    text = "".join(c.text for c in chunks)
    done = subprocess.run([*MAAS, "generate", "gen", "17+25=", "--max-tokens", "8",
                           "--target", cluster.target], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == text + "\n"
    assert f"[{chunks[-1].finish_reason}, {chunks[-1].completion_tokens} tokens]" in done.stderr
    doc = json.loads(subprocess.run(
        [*MAAS, "generate", "gen", "17+25=", "--max-tokens", "8", "--json",
         "--target", cluster.target], capture_output=True, text=True, timeout=60).stdout)
    assert doc["token_ids"] == [t for c in chunks for t in c.token_ids]
    bad = subprocess.run([*MAAS, "generate", "gen", "x", "--max-tokens", "0",
                          "--target", cluster.target], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("maas: INVALID_ARGUMENT")
    assert "max_tokens" in bad.stderr and "Traceback" not in bad.stderr
