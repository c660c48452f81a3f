"""Runs one training job to the end, checkpointing so that a restart resumes bit-exactly.

Determinism: torch.manual_seed(spec.seed), deterministic algorithms, the validation split
from the seed, and each epoch's data order from a torch.Generator seeded with (seed, epoch),
never from global RNG. A checkpoint in `out_dir` is resumed from; with the same device
type, thread count and torch version the final weights are bit-identical to an unbroken run.

This module checks the job, sets determinism and resumes; the loop itself is
worker/training/steps.py (its names used elsewhere are re-exported here).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from runtime.architectures import get_architecture
from runtime.datasets import Dataset, check_labels, check_prompts, dataset_sha256, present
from runtime.training_spec import TrainingSpec
from worker.training.checkpoint import load_checkpoint
from worker.training.determinism import configure_determinism, pick_device
from worker.training.distributed import Replica
from worker.training.steps import FINAL_WEIGHTS as FINAL_WEIGHTS  # re-exported for callers
from worker.training.steps import PROGRESS_EVERY_STEPS as PROGRESS_EVERY_STEPS
from worker.training.steps import Event as Event
from worker.training.steps import Trainer
from worker.training.steps import TrainingOutcome as TrainingOutcome
from worker.training.steps import build_optimizer as build_optimizer
from worker.training.steps import state_dict_sha256 as state_dict_sha256


def _never() -> bool:
    return False


def run_training(
    spec: TrainingSpec,
    dataset: Dataset,
    out_dir: Path,
    on_event: Callable[[Event], None],
    init_state_dict: Mapping[str, torch.Tensor] | None = None,
    should_stop: Callable[[], bool] = _never,
    device: str = "auto",
    replica: Replica | None = None,
) -> TrainingOutcome:
    """Trains (or resumes) the job; INVALID_ARGUMENT when spec and dataset do not fit."""
    spec.validate()
    spec = spec.with_config_resolved()
    arch = get_architecture(spec.architecture)
    data = present(dataset, arch.inputs(spec.config)[0].shape)
    if arch.is_generative:  # labels are prompt lengths
        check_prompts(data)
    else:
        check_labels(data, arch.outputs(spec.config)[0].shape[-1])
    target = pick_device(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        configure_determinism(spec.seed, target)
        trainer = Trainer(spec, data, out_dir, target, on_event, should_stop,
                          replica or Replica())
        identity = _identity(spec, dataset, target)
        trainer.start(load_checkpoint(out_dir, identity), init_state_dict, identity)
        return trainer.run()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _identity(spec: TrainingSpec, dataset: Dataset, device: torch.device) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (job) and to resume exactly (environment)."""
    spec_doc = spec.to_dict()
    if spec_doc.get("replicas") == 1:
        del spec_doc["replicas"]  # checkpoints from before replicas existed still resume
    job = {"spec": spec_doc, "dataset_sha256": dataset_sha256(dataset)}
    environment = {"torch": torch.__version__, "device": device.type,
                   "threads": torch.get_num_threads(), "machine": platform.machine()}
    normalized: dict[str, Any] = json.loads(json.dumps({"job": job, "environment": environment}))
    return normalized
