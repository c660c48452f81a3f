"""Training checkpoints that resume bit-exactly, without pickle.

One file, `checkpoint.safetensors`, is the commit point: tensors (model `model.*`, optimizer
state `optim.<param>.<key>`, best-epoch weights `best.*`) plus, in its `__metadata__`, a JSON
document with the loop position, non-tensor optimizer state and every RNG state (bytes as
base64). Written atomically, so a SIGKILL leaves the previous checkpoint or the new one.
`checkpoint.json` is the same JSON, written after it, for people and tools to read.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from maas.errors import FailedPrecondition
from runtime.artifacts import write_atomic

logger = logging.getLogger(__name__)

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
FORMAT = "maas.training.checkpoint/v1"
_METADATA_KEY = "maas.checkpoint"

StateDict = dict[str, torch.Tensor]


@dataclass
class LoopState:
    """Where the loop is: enough, with the tensors and RNG states, to continue exactly."""

    epoch: int = 0  # 0-based epoch in progress (= epochs completed)
    step_in_epoch: int = 0  # optimizer steps done in that epoch
    global_step: int = 0
    epoch_loss_sum: float = 0.0  # sum over the epoch's batches of mean loss x batch size
    epoch_samples: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0  # 1-based epoch whose weights are kept as best; 0 = none yet
    train_seconds: float = 0.0  # wall time spent in steps, for samples_per_second only
    train_samples: int = 0


@dataclass
class Checkpoint:
    loop: LoopState
    model: StateDict
    optimizer_state: dict[int, dict[str, Any]]
    best: StateDict | None
    rng: dict[str, Any]


def save_checkpoint(out_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    loop: LoopState, best: StateDict | None, identity: dict[str, Any]) -> Path:
    """Writes the checkpoint atomically; returns the path of its safetensors file."""
    tensors = {f"model.{k}": _cpu(v) for k, v in model.state_dict().items()}
    values: dict[str, dict[str, Any]] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = _cpu(value)
            else:
                values.setdefault(str(index), {})[key] = value
    if best is not None:
        tensors.update({f"best.{k}": _cpu(v) for k, v in best.items()})
    document = {"format": FORMAT, "identity": identity, "loop": asdict(loop),
                "optimizer_values": values, "rng": capture_rng()}
    text = json.dumps(document, sort_keys=True)
    path = out_dir / CHECKPOINT_TENSORS
    write_atomic(path, safetensors.torch.save(tensors, metadata={_METADATA_KEY: text}))
    write_atomic(out_dir / CHECKPOINT_JSON, text.encode())
    return path


def load_checkpoint(out_dir: Path, identity: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint in out_dir, or None; FAILED_PRECONDITION if it belongs to another job."""
    path = out_dir / CHECKPOINT_TENSORS
    if not path.exists():
        return None
    data = path.read_bytes()
    document = json.loads(_metadata(data)[_METADATA_KEY])
    if document.get("format") != FORMAT:
        raise FailedPrecondition(f"{path} has unknown format {document.get('format')!r}")
    saved = document["identity"]
    if saved.get("job") != identity.get("job"):
        raise FailedPrecondition(f"{path} belongs to another training job; use a fresh directory")
    if saved.get("environment") != identity.get("environment"):
        logger.warning("resuming %s in a different environment (%s, was %s): the result may "
                       "differ in the last bits", path, identity.get("environment"),
                       saved.get("environment"))
    tensors = safetensors.torch.load(data)
    optimizer_state: dict[int, dict[str, Any]] = {}
    for index, items in document["optimizer_values"].items():
        optimizer_state.setdefault(int(index), {}).update(items)
    for name, tensor in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            optimizer_state.setdefault(int(index), {})[key] = tensor
    has_best = any(name.startswith("best.") for name in tensors)
    return Checkpoint(
        loop=LoopState(**document["loop"]),
        model=_with_prefix(tensors, "model."),
        optimizer_state=optimizer_state,
        best=_with_prefix(tensors, "best.") if has_best else None,
        rng=document["rng"],
    )


def restore_optimizer(optimizer: torch.optim.Optimizer,
                      state: dict[int, dict[str, Any]]) -> None:
    """Loads saved per-parameter state, keeping the param groups the spec built."""
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _metadata(data: bytes) -> dict[str, str]:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    metadata: dict[str, str] = header.get("__metadata__") or {}
    if _METADATA_KEY not in metadata:
        raise FailedPrecondition("checkpoint file has no maas checkpoint metadata")
    return metadata


def _with_prefix(tensors: StateDict, prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").contiguous()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _bytes_tensor(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())


def capture_rng() -> dict[str, Any]:
    """torch CPU (and CUDA), numpy and python RNG states as JSON-ready values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        cuda = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return {
        "torch_cpu": _b64(torch.get_rng_state().numpy().tobytes()),
        "torch_cuda": cuda,
        "numpy": {"kind": kind, "keys": _b64(np.asarray(keys, dtype="<u4").tobytes()),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": cached},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Puts back the states `capture_rng` returned."""
    torch.set_rng_state(_bytes_tensor(rng["torch_cpu"]))
    if rng["torch_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in rng["torch_cuda"]])
    n = rng["numpy"]
    keys = np.frombuffer(base64.b64decode(n["keys"]), dtype="<u4").astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
