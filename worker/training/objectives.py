"""What a training job minimises and how it is scored, by kind of architecture.

- Classification (mlp, cnn, rnn, transformer): cross-entropy of the logits against the class
  labels; val_accuracy is the share of argmax predictions that are right.
- Next-token prediction (generative `gpt`): labels are each row's prompt length; the loss is
  the cross-entropy of predicting every token after the prompt (answer and EOS) from the
  tokens before it, averaged per row; val_accuracy is the exact match of GREEDY generations
  from the prompts alone (each token generated feeds the next), compared with the whole answer
  through its EOS.

Both losses are per-row means reduced over rows, so a "sum" splits over DDP ranks exactly.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from runtime.architecture_spec import Architecture
from runtime.gpt_tokens import PAD
from worker.training.inputs import Inputs, select

EVAL_BATCH = 1024  # rows per evaluation forward pass


class Objective(Protocol):
    def loss(self, model: torch.nn.Module, inputs: Inputs, targets: torch.Tensor,
             reduction: str) -> torch.Tensor:
        """The batch's loss: its mean over rows ("mean") or its sum ("sum")."""

    def evaluate(self, model: torch.nn.Module, inputs: Inputs,
                 targets: torch.Tensor) -> dict[str, float]:
        """val_loss and val_accuracy of the whole split (model in eval, inference mode)."""


class Classification:
    def loss(self, model: torch.nn.Module, inputs: Inputs, targets: torch.Tensor,
             reduction: str) -> torch.Tensor:
        return F.cross_entropy(model(*inputs), targets, reduction=reduction)

    def evaluate(self, model: torch.nn.Module, inputs: Inputs,
                 targets: torch.Tensor) -> dict[str, float]:
        loss_sum, correct, n = 0.0, 0, len(targets)
        for begin in range(0, n, EVAL_BATCH):
            logits = model(*select(inputs, slice(begin, begin + EVAL_BATCH)))
            batch = targets[begin : begin + EVAL_BATCH]
            loss_sum += float(F.cross_entropy(logits, batch, reduction="sum").item())
            correct += int((logits.argmax(dim=1) == batch).sum().item())
        return {"val_loss": loss_sum / n, "val_accuracy": correct / n}


def _row_losses(model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor,
                prompts: torch.Tensor) -> torch.Tensor:
    """[B]: each row's mean cross-entropy of its tokens prompt..length-1, each predicted from
    the position before it."""
    logits = model(tokens)[:, :-1]  # position t predicts token t + 1
    following = tokens[:, 1:]
    positions = torch.arange(1, tokens.shape[1], device=tokens.device)[None, :]
    is_target = (positions >= prompts[:, None]) & (positions < lengths[:, None])
    token_losses = F.cross_entropy(logits.transpose(1, 2), following, reduction="none")
    counts = is_target.sum(dim=1).clamp(min=1)
    return (token_losses * is_target).sum(dim=1) / counts


def greedy_matches(model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor,
                   prompts: torch.Tensor) -> torch.Tensor:
    """[B] bool: whether greedy generation from each row's prompt gives exactly the row's
    tokens prompt..length-1 (its answer and EOS). Rows are generated together, one position
    per step; a causal model never sees the PAD after a row's own position."""
    steps = tokens.shape[1]
    positions = torch.arange(steps, device=tokens.device)[None, :]
    generated = torch.where(positions < prompts[:, None], tokens, PAD)
    rows = torch.arange(len(tokens), device=tokens.device)
    for step in range(int((lengths - prompts).max())):
        known = torch.minimum(prompts + step, lengths - 1)  # tokens known; the next goes here
        width = int(known.max())
        next_ids = model(generated[:, :width], known).argmax(dim=-1)
        writing = prompts + step < lengths
        generated[rows[writing], known[writing]] = next_ids[writing]
    is_answer = (positions >= prompts[:, None]) & (positions < lengths[:, None])
    return ((generated == tokens) | ~is_answer).all(dim=1)


class NextToken:
    def loss(self, model: torch.nn.Module, inputs: Inputs, targets: torch.Tensor,
             reduction: str) -> torch.Tensor:
        tokens, lengths = inputs
        per_row = _row_losses(model, tokens, lengths, targets)
        return per_row.sum() if reduction == "sum" else per_row.mean()

    def evaluate(self, model: torch.nn.Module, inputs: Inputs,
                 targets: torch.Tensor) -> dict[str, float]:
        loss_sum, correct, n = 0.0, 0, len(targets)
        for begin in range(0, n, EVAL_BATCH):
            tokens, lengths = select(inputs, slice(begin, begin + EVAL_BATCH))
            prompts = targets[begin : begin + EVAL_BATCH]
            loss_sum += float(_row_losses(model, tokens, lengths, prompts).sum().item())
            correct += int(greedy_matches(model, tokens, lengths, prompts).sum().item())
        return {"val_loss": loss_sum / n, "val_accuracy": correct / n}


def objective_for(architecture: Architecture) -> Objective:
    return NextToken() if architecture.is_generative else Classification()
