"""What the training loop feeds a model: (features,) or, for the sequence architectures,
(tokens, lengths) built from a dataset's token-id features and optional `lengths`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from maas.errors import FieldViolation, InvalidArgument
from runtime.architectures import get_architecture
from runtime.datasets import Dataset

Inputs = tuple[torch.Tensor, ...]
_SEQUENCE_INPUTS = ["tokens", "lengths"]


def model_inputs(architecture: str, config: dict[str, Any], data: Dataset) -> Inputs:
    """The model's inputs for every sample (on the CPU); INVALID_ARGUMENT when a sequence
    dataset does not fit the model (ids not integers in [0, vocab_size), T > max_len)."""
    arch = get_architecture(architecture)
    if [s.name for s in arch.inputs(config)] != _SEQUENCE_INPUTS:
        return (torch.from_numpy(data.features),)
    tokens = data.features.astype(np.int64)
    if not np.array_equal(tokens, data.features):
        raise _invalid("features", "token ids must be whole numbers")
    lengths = data.lengths
    if lengths is None:  # every token is real
        lengths = np.full(len(tokens), tokens.shape[1], dtype=np.int64)
    arrays = {"tokens": tokens, "lengths": lengths}
    for name, _, why in arch.check_inputs(config, arrays):
        raise _invalid("features" if name == "tokens" else name, why)
    return torch.from_numpy(tokens), torch.from_numpy(lengths)


def _invalid(field: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"the dataset does not fit the model: {why}",
                           violations=(FieldViolation(f"dataset.{field}", why),))


def select(inputs: Inputs, index: torch.Tensor | slice) -> Inputs:
    """The rows `index` of every input; sequences cut to the batch's longest (no work on
    columns that are padding in every row: the models ignore padding anyway)."""
    rows = tuple(t[index] for t in inputs)
    if len(rows) == 2 and len(rows[1]):
        tokens, lengths = rows
        return tokens[:, : int(lengths.max())], lengths
    return rows
