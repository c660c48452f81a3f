"""The demo models as `maas up` registers them, run in-process for comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from maas.v1.model_service_pb2 import ModelVersion
from runtime.architectures import get_architecture


def reference_model(name: str) -> torch.nn.Module:
    arch = get_architecture(name)
    torch.manual_seed(0)
    return arch.build(arch.resolve_config(None)).eval()


def run_reference(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def run_registered(version: ModelVersion, artifacts: Path, architecture: str,
                   x: np.ndarray) -> np.ndarray:
    """A registered version's weights, read from the local artifact store, run in-process:
    what a worker should answer."""
    path = artifacts / "weights" / f"{version.weights_sha256}.safetensors"
    model = get_architecture(architecture).build(json.loads(version.config_json))
    model.load_state_dict(safetensors.torch.load_file(path))
    return run_reference(model.eval(), x)
