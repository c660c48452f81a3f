"""The demo models as `maas up` registers them, run in-process for comparison."""

from __future__ import annotations

import numpy as np
import torch

from runtime.architectures import get_architecture


def reference_model(name: str) -> torch.nn.Module:
    arch = get_architecture(name)
    torch.manual_seed(0)
    return arch.build(arch.resolve_config(None)).eval()


def run_reference(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()
