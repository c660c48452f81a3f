"""The training runner: events, cancellation, and bit-exact resume in-process and after SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

from maas.errors import FailedPrecondition, InvalidArgument
from runtime.architectures import get_architecture
from runtime.datasets import Dataset, builtin_dataset, present, split
from runtime.training_spec import TrainingSpec
from worker.training.checkpoint import CHECKPOINT_JSON, capture_rng, restore_rng
from worker.training.runner import TrainingOutcome, run_training

REPO = Path(__file__).resolve().parents[2]
CNN_SPEC: dict[str, Any] = {"architecture": "cnn", "dataset": "digits", "lr": 0.02,
                            "batch_size": 16, "max_steps": 60, "checkpoint_every": 20}
MLP_SPEC: dict[str, Any] = {"architecture": "mlp", "dataset": "digits", "optimizer": "adam",
                            "lr": 0.003, "batch_size": 64, "epochs": 3, "keep": "best",
                            "checkpoint_every": 7, "config": {"hidden": [32]}}

# A small gpt on next-token addition: greedy exact match is its val_accuracy.
GPT_SPEC: dict[str, Any] = {"architecture": "gpt", "dataset": "addition", "optimizer": "adamw",
                            "lr": 0.003, "batch_size": 32, "epochs": 2, "keep": "best",
                            "validation_fraction": 0.9, "checkpoint_every": 7,
                            "config": {"d_model": 16, "heads": 2, "layers": 1, "ff": 32,
                                       "max_len": 12}}


class Crash(Exception):
    """Stands in for the process dying between checkpoints."""


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread, as workers run: two threads on a busy 2-core box crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return builtin_dataset("digits")


def _train(spec: dict[str, Any], dataset: Dataset, out: Path,
           should_stop: Callable[[], bool] | None = None,
           events: list[dict[str, Any]] | None = None) -> TrainingOutcome:
    sink = events if events is not None else []
    return run_training(TrainingSpec.from_dict(spec), dataset, out, sink.append,
                        should_stop=should_stop or (lambda: False))


def _stop_after(steps: int, crash: bool = False) -> Callable[[], bool]:
    """A should_stop that lets `steps` optimizer steps run, then stops (or crashes)."""
    polls = iter(range(steps))

    def should_stop() -> bool:
        if next(polls, None) is not None:
            return False
        if crash:
            raise Crash
        return True

    return should_stop


@pytest.fixture(scope="module")
def cnn_reference(digits: Dataset, tmp_path_factory: pytest.TempPathFactory,
                  ) -> tuple[TrainingOutcome, list[dict[str, Any]], Path]:
    out = tmp_path_factory.mktemp("cnn-reference")
    events: list[dict[str, Any]] = []
    return _train(CNN_SPEC, digits, out, events=events), events, out


def test_uninterrupted_run_events_and_weights(
        cnn_reference: tuple[TrainingOutcome, list[dict[str, Any]], Path]) -> None:
    outcome, events, out = cnn_reference
    assert outcome.status == "SUCCEEDED" and outcome.steps == 60 and outcome.epochs == 1
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["global_step"] for e in progress] == [10, 20, 30, 40, 50, 60]
    assert set(progress[0]) == {"type", "epoch", "step", "global_step", "total_steps", "loss",
                                "samples_per_second"}
    assert progress[0]["total_steps"] == 60
    assert [e["global_step"] for e in events if e["type"] == "checkpoint"] == [20, 40, 60]
    (epoch,) = [e for e in events if e["type"] == "epoch"]
    assert set(epoch) == {"type", "epoch", "train_loss", "val_loss", "val_accuracy"}
    assert set(outcome.metrics) == {"train_loss", "val_loss", "val_accuracy",
                                    "samples_per_second"}
    weights = safetensors.torch.load_file(out / "final.safetensors")
    shapes = get_architecture("cnn").param_shapes({"num_classes": 10})
    assert {k: tuple(v.shape) for k, v in weights.items()} == shapes


@pytest.mark.parametrize("steps", [0, 20, 27])
def test_stop_then_resume_is_bit_exact(
        steps: int, digits: Dataset, tmp_path: Path,
        cnn_reference: tuple[TrainingOutcome, list[dict[str, Any]], Path]) -> None:
    stopped = _train(CNN_SPEC, digits, tmp_path, should_stop=_stop_after(steps))
    assert stopped.status == "CANCELLED" and stopped.steps == steps and stopped.sha256 == ""
    assert not (tmp_path / "final.safetensors").exists()
    resumed = _train(CNN_SPEC, digits, tmp_path)
    assert resumed.sha256 == cnn_reference[0].sha256
    assert resumed.history == cnn_reference[0].history


def test_crash_resumes_from_the_last_checkpoint(
        digits: Dataset, tmp_path: Path,
        cnn_reference: tuple[TrainingOutcome, list[dict[str, Any]], Path]) -> None:
    with pytest.raises(Crash):
        _train(CNN_SPEC, digits, tmp_path, should_stop=_stop_after(33, crash=True))
    saved = json.loads((tmp_path / CHECKPOINT_JSON).read_text())
    assert saved["loop"]["global_step"] == 20
    events: list[dict[str, Any]] = []
    resumed = _train(CNN_SPEC, digits, tmp_path, events=events)
    assert events[0]["global_step"] == 30  # picked up at step 20, not from scratch
    assert resumed.sha256 == cnn_reference[0].sha256


def test_adam_keep_best_resumes_across_epochs(digits: Dataset, tmp_path: Path) -> None:
    reference = _train(MLP_SPEC, digits, tmp_path / "reference")
    assert reference.epochs == 3 and 1 <= reference.best_epoch <= 3
    best = reference.history[reference.best_epoch - 1]
    assert reference.metrics["val_accuracy"] == best["val_accuracy"]
    out = tmp_path / "resumed"
    with pytest.raises(Crash):  # dies in epoch 2, after the checkpoint at step 28
        _train(MLP_SPEC, digits, out, should_stop=_stop_after(30, crash=True))
    assert _train(MLP_SPEC, digits, out, should_stop=_stop_after(9)).status == "CANCELLED"
    resumed = _train(MLP_SPEC, digits, out)
    assert resumed.sha256 == reference.sha256
    assert resumed.best_epoch == reference.best_epoch
    assert resumed.history == reference.history


def test_gpt_next_token_training_resumes_bit_exactly(tmp_path: Path) -> None:
    addition = builtin_dataset("addition")
    reference = _train(GPT_SPEC, addition, tmp_path / "reference")
    assert reference.epochs == 2 and reference.steps == 64
    assert set(reference.history[0]) == {"epoch", "train_loss", "val_loss", "val_accuracy"}
    out = tmp_path / "resumed"
    with pytest.raises(Crash):  # dies in epoch 2, after the checkpoint at step 35
        _train(GPT_SPEC, addition, out, should_stop=_stop_after(40, crash=True))
    assert _train(GPT_SPEC, addition, out, should_stop=_stop_after(9)).status == "CANCELLED"
    resumed = _train(GPT_SPEC, addition, out)
    assert resumed.sha256 == reference.sha256
    assert resumed.history == reference.history


def test_best_weights_are_the_best_epochs(digits: Dataset, tmp_path: Path) -> None:
    outcome = _train(MLP_SPEC, digits, tmp_path)
    model = get_architecture("mlp").build(TrainingSpec.from_dict(MLP_SPEC)
                                          .with_config_resolved().config)
    model.load_state_dict(safetensors.torch.load_file(tmp_path / "final.safetensors"))
    data = present(digits, (-1, 64))
    _, val = split(data.num_samples, 0.2, seed=0)
    with torch.inference_mode():
        predicted = model(torch.from_numpy(data.features[val])).argmax(dim=1).numpy()
    accuracy = float((predicted == data.labels[val]).mean())
    assert accuracy == pytest.approx(outcome.metrics["val_accuracy"])


def test_a_checkpoint_of_another_job_is_refused(digits: Dataset, tmp_path: Path) -> None:
    _train({**CNN_SPEC, "max_steps": 5}, digits, tmp_path)
    with pytest.raises(FailedPrecondition):
        _train({**CNN_SPEC, "max_steps": 5, "lr": 0.01}, digits, tmp_path)


def test_init_state_dict_is_the_starting_point(digits: Dataset, tmp_path: Path) -> None:
    spec = TrainingSpec.from_dict({**MLP_SPEC, "optimizer": "sgd", "lr": 1e-12, "momentum": 0,
                                   "max_steps": 1, "epochs": 0, "keep": "last"})
    torch.manual_seed(1234)
    init = get_architecture("mlp").build({"in_features": 64, "hidden": [32], "num_classes": 10})
    init_state = {k: v.clone() for k, v in init.state_dict().items()}
    run_training(spec, digits, tmp_path, lambda event: None, init_state_dict=init_state)
    final = safetensors.torch.load_file(tmp_path / "final.safetensors")
    for name, tensor in init_state.items():
        torch.testing.assert_close(final[name], tensor)


def test_init_weights_that_do_not_fit_name_init_from(digits: Dataset, tmp_path: Path) -> None:
    spec = TrainingSpec.from_dict({**CNN_SPEC, "max_steps": 1})
    wrong = {"conv1.weight": torch.zeros(10, 1, 3, 3)}
    with pytest.raises(InvalidArgument) as exc:
        run_training(spec, digits, tmp_path, lambda event: None, init_state_dict=wrong)
    assert [v.field for v in exc.value.violations] == ["init_from"]


def test_rng_states_round_trip() -> None:
    state = json.loads(json.dumps(capture_rng()))
    before = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    after = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(before[0], after[0], rtol=0, atol=0)
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2] == after[2]


def _cli(spec_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "worker.training", "--spec", str(spec_path),
            "--dataset", "digits", "--out", str(out), "--threads", "1"]


def _result(stdout: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    result: dict[str, Any] = lines[-1]
    assert result["type"] == "result", lines[-1]
    return result


@pytest.mark.slow
def test_sigkilled_subprocess_resumes_bit_exactly(tmp_path: Path) -> None:
    spec = {**CNN_SPEC, "max_steps": 200}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "MAAS_LOG_LEVEL": "WARNING"}
    reference = subprocess.run(_cli(spec_path, tmp_path / "reference"), cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=60, check=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(spec_path, out), cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["type"] == "checkpoint":
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final.safetensors").exists(), "finished before the kill; nothing tested"
    resumed = subprocess.run(_cli(spec_path, out), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=60, check=True)
    first = json.loads(resumed.stdout.splitlines()[0])
    assert first["global_step"] > 10  # resumed from a checkpoint, not from scratch
    assert _result(resumed.stdout)["sha256"] == _result(reference.stdout)["sha256"]


@pytest.mark.slow
def test_seed_cnn_learns_digits(digits: Dataset, tmp_path: Path) -> None:
    spec = {"architecture": "cnn", "dataset": "digits", "optimizer": "sgd", "lr": 0.02,
            "momentum": 0.9, "batch_size": 16, "epochs": 10, "keep": "best",
            "checkpoint_every": 0}
    outcome = _train(spec, digits, tmp_path)
    assert outcome.metrics["val_accuracy"] >= 0.95, outcome.history
