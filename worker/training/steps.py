"""The training loop of one job (worker/training/runner.py sets it up): epochs of steps over
a seeded data order, on one replica or as one DDP rank's share of each global batch;
evaluation and the best epoch; checkpoints; the final weights and the outcome.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from maas.errors import FieldViolation, InvalidArgument
from runtime.architectures import get_architecture
from runtime.artifacts import write_atomic
from runtime.datasets import Dataset, split
from runtime.training_spec import TrainingSpec
from worker.training.checkpoint import (
    Checkpoint,
    LoopState,
    StateDict,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
)
from worker.training.determinism import epoch_seed
from worker.training.distributed import Replica
from worker.training.inputs import model_inputs, select
from worker.training.objectives import objective_for

logger = logging.getLogger(__name__)

FINAL_WEIGHTS = "final.safetensors"
PROGRESS_EVERY_STEPS = 10

Event = dict[str, Any]


@dataclass(frozen=True)
class TrainingOutcome:
    """status SUCCEEDED (weights written) or CANCELLED (checkpoint kept, resumable)."""

    status: str
    steps: int
    epochs: int
    metrics: dict[str, float]
    sha256: str = ""
    weights_path: Path | None = None
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def build_optimizer(spec: TrainingSpec, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay)
    cls = torch.optim.Adam if spec.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=spec.lr, weight_decay=spec.weight_decay)


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> tuple[str, bytes]:
    """(sha256, bytes) of the safetensors form of a state dict (no metadata: content only)."""
    data = safetensors.torch.save({k: v.detach().to("cpu").contiguous() for k, v in state.items()})
    return hashlib.sha256(data).hexdigest(), data


def _load_init(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InvalidArgument(f"init_from weights do not fit the architecture: {exc}",
                              violations=(FieldViolation("init_from", "weights do not fit"),),
                              ) from exc


class Trainer:
    """The loop's state and steps; `run` drives epochs until done, stopped or out of steps."""

    def __init__(self, spec: TrainingSpec, data: Dataset, out_dir: Path, device: torch.device,
                 on_event: Callable[[Event], None], should_stop: Callable[[], bool],
                 replica: Replica) -> None:
        self.spec, self.out_dir, self.device = spec, out_dir, device
        self.replica = replica
        self._is_stop_agreed = False  # replicas: any rank asked to stop (agreed each step)
        self.on_event, self.should_stop = on_event, should_stop
        train_idx, val_idx = split(data.num_samples, spec.validation_fraction, spec.seed)
        inputs = model_inputs(spec.architecture, spec.config, data)  # (features,) or sequences
        labels = torch.from_numpy(data.labels)
        self.train_x = tuple(t[torch.from_numpy(train_idx)].to(device) for t in inputs)
        self.train_y = labels[torch.from_numpy(train_idx)].to(device)
        self.val_x = tuple(t[torch.from_numpy(val_idx)].to(device) for t in inputs)
        self.val_y = labels[torch.from_numpy(val_idx)].to(device)
        self.steps_per_epoch = math.ceil(len(train_idx) / spec.batch_size)
        by_epochs = spec.epochs * self.steps_per_epoch if spec.epochs > 0 else 0
        self.total_steps = min(s for s in (by_epochs, spec.max_steps) if s) if (
            by_epochs or spec.max_steps) else 0
        architecture = get_architecture(spec.architecture)
        self.objective = objective_for(architecture)  # classes, or next tokens (gpt)
        self.model = architecture.build(spec.config).to(device)
        self.net: torch.nn.Module = self.model  # what trains: DDP around it with replicas
        self.optimizer = build_optimizer(spec, self.model)
        self.loop = LoopState()
        self.best: StateDict | None = None
        self.identity: dict[str, Any] = {}
        self._window = (0.0, 0, time.perf_counter())  # loss sum, samples, start

    def start(self, checkpoint: Checkpoint | None,
              init_state_dict: Mapping[str, torch.Tensor] | None,
              identity: dict[str, Any]) -> None:
        self.identity = identity
        if checkpoint is None:
            if init_state_dict is not None:
                _load_init(self.model, init_state_dict)
            return
        self.model.load_state_dict(checkpoint.model)
        restore_optimizer(self.optimizer, checkpoint.optimizer_state)
        self.loop = checkpoint.loop
        if checkpoint.best is not None:
            self.best = {k: v.to(self.device) for k, v in checkpoint.best.items()}
        restore_rng(checkpoint.rng)
        logger.info("resumed from %s at epoch %d, step %d (global step %d)", self.out_dir,
                    self.loop.epoch + 1, self.loop.step_in_epoch, self.loop.global_step)

    def run(self) -> TrainingOutcome:
        # After start(): DDP's constructor broadcasts rank 0's (resumed) weights to the others.
        self.net = self.replica.wrap(self.model, self.device)
        self.net.train()
        while not self._is_done():
            if not self._run_epoch():
                self._checkpoint()
                return self._outcome("CANCELLED")
        return self._finish()

    def _is_done(self) -> bool:
        spec, loop = self.spec, self.loop
        return (spec.epochs > 0 and loop.epoch >= spec.epochs) or (
            spec.max_steps > 0 and loop.global_step >= spec.max_steps)

    def _run_epoch(self) -> bool:
        """Trains the rest of the current epoch, then evaluates; False when told to stop."""
        generator = torch.Generator().manual_seed(epoch_seed(self.spec.seed, self.loop.epoch))
        order = torch.randperm(len(self.train_y), generator=generator).to(self.device)
        size = self.spec.batch_size
        for batch in range(self.loop.step_in_epoch, self.steps_per_epoch):
            if self._should_stop():
                return False
            self._step(order[batch * size : (batch + 1) * size])
            if self._is_done():
                break
            every = self.spec.checkpoint_every
            if every and self.loop.global_step % every == 0 and batch + 1 < self.steps_per_epoch:
                self._checkpoint()
        self._end_epoch()
        return True

    def _step(self, idx: torch.Tensor) -> None:
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        if self.replica.is_distributed:
            batch_loss = self._replica_backward(idx)
        else:
            loss = self.objective.loss(self.model, select(self.train_x, idx),
                                       self.train_y[idx], "mean")
            loss.backward()  # type: ignore[no-untyped-call]
            batch_loss = float(loss.item()) * len(idx)
        self.optimizer.step()
        loop = self.loop
        loop.step_in_epoch += 1
        loop.global_step += 1
        loop.epoch_loss_sum += batch_loss
        loop.epoch_samples += len(idx)
        loop.train_seconds += time.perf_counter() - started
        loop.train_samples += len(idx)
        self._progress(batch_loss, len(idx))

    def _should_stop(self) -> bool:
        return self._is_stop_agreed if self.replica.is_distributed else self.should_stop()

    def _replica_backward(self, idx: torch.Tensor) -> float:
        """Backward of this rank's share of the global batch `idx`; the global loss sum.
        DDP averages gradients over ranks, so the rank's loss sum is scaled by
        world_size / len(idx): the average is then the global batch's mean, as one replica."""
        part = self.replica.shard(idx)
        loss_sum = self.objective.loss(self.net, select(self.train_x, part), self.train_y[part],
                                       "sum")
        (loss_sum * (self.replica.world_size / len(idx))).backward()  # type: ignore[no-untyped-call]
        total, self._is_stop_agreed = self.replica.reduce_step(float(loss_sum.item()),
                                                               self.should_stop())
        return total

    def _progress(self, batch_loss: float, samples: int) -> None:
        loss_sum, count, since = self._window
        loss_sum, count = loss_sum + batch_loss, count + samples
        last = self.loop.global_step == self.total_steps
        if self.loop.global_step % PROGRESS_EVERY_STEPS and not last:
            self._window = (loss_sum, count, since)
            return
        now = time.perf_counter()
        self.on_event({"type": "progress", "epoch": self.loop.epoch + 1,
                       "step": self.loop.step_in_epoch, "global_step": self.loop.global_step,
                       "total_steps": self.total_steps, "loss": loss_sum / count,
                       "samples_per_second": count / max(now - since, 1e-9)})
        self._window = (0.0, 0, now)

    def _end_epoch(self) -> None:
        loop = self.loop
        metrics: dict[str, float] = {"epoch": loop.epoch + 1,
                                     "train_loss": loop.epoch_loss_sum / max(loop.epoch_samples, 1)}
        metrics.update(self._evaluate())
        loop.history.append(metrics)
        if self.spec.keep == "best" and self._is_best(metrics):
            loop.best_epoch = loop.epoch + 1
            self.best = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        loop.epoch += 1
        loop.step_in_epoch, loop.epoch_loss_sum, loop.epoch_samples = 0, 0.0, 0
        self.on_event({"type": "epoch", **metrics})
        self._checkpoint()

    def _is_best(self, metrics: Mapping[str, float]) -> bool:
        if self.loop.best_epoch == 0:
            return True
        best = self.loop.history[self.loop.best_epoch - 1]
        key = (metrics["val_accuracy"], -metrics["val_loss"])
        return key > (best["val_accuracy"], -best["val_loss"])

    def _evaluate(self) -> dict[str, float]:
        """val_loss and val_accuracy over the validation split (empty when there is none)."""
        if len(self.val_y) == 0:
            return {}
        self.model.eval()
        with torch.inference_mode():
            metrics = self.objective.evaluate(self.model, self.val_x, self.val_y)
        self.model.train()
        return metrics

    def _checkpoint(self) -> None:
        if not self.replica.is_leader:
            return  # rank 0 checkpoints: every rank holds the same weights
        path = save_checkpoint(self.out_dir, self.model, self.optimizer, self.loop, self.best,
                               self.identity)
        self.on_event({"type": "checkpoint", "global_step": self.loop.global_step,
                       "path": str(path)})

    def _finish(self) -> TrainingOutcome:
        if not self.replica.is_leader:
            return self._outcome("SUCCEEDED")  # rank 0 writes the weights
        kept = self.best if self.spec.keep == "best" and self.best is not None else None
        digest, data = state_dict_sha256(kept if kept is not None else self.model.state_dict())
        path = self.out_dir / FINAL_WEIGHTS
        write_atomic(path, data)
        return self._outcome("SUCCEEDED", digest, path)

    def _outcome(self, status: str, digest: str = "", path: Path | None = None) -> TrainingOutcome:
        loop = self.loop
        index = loop.best_epoch - 1 if self.spec.keep == "best" and loop.best_epoch else -1
        metrics = dict(loop.history[index]) if loop.history else {}
        metrics.pop("epoch", None)
        metrics["samples_per_second"] = loop.train_samples / max(loop.train_seconds, 1e-9)
        return TrainingOutcome(status=status, steps=loop.global_step, epochs=loop.epoch,
                               metrics=metrics, sha256=digest, weights_path=path,
                               best_epoch=loop.best_epoch, history=list(loop.history))
