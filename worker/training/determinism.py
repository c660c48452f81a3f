"""Reproducibility: the device, torch's deterministic mode, and per-epoch data-order seeds.

Bit-exact results need the same device type, thread count and torch version; on CUDA also a
fixed cuBLAS workspace (CUBLAS_WORKSPACE_CONFIG), set before CUDA first uses cuBLAS.
"""

from __future__ import annotations

import os

import numpy as np
import torch


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when present (for "auto"), else CPU; or exactly the device named."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def configure_determinism(seed: int, device: torch.device) -> None:
    """Seeds torch and turns on deterministic algorithms (process-wide: callers restore)."""
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; read when CUDA first uses it.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def epoch_seed(seed: int, epoch: int) -> int:
    """The data-order seed of one epoch: a hash of (seed, epoch), independent of other RNG."""
    words = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 32 | int(words[1])
