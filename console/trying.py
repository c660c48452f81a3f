"""Trying a model: which input a page can draw (an image input: [1,] H, W), the .npy the page
sends read safely (no pickle), and outputs and attributions summarised for the page."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from maas.errors import FieldViolation, InvalidArgument
from maas.explanation import Explanation
from maas.tensors import NUMPY_DTYPES
from maas.v1 import model_service_pb2 as mpb

# The most output values shown of one row.
MAX_SHOWN = 64


@dataclass(frozen=True)
class InputSpec:
    """The model's first input; `height`/`width` when it is an image the page can draw."""

    name: str
    datatype: str
    shape: list[int]
    height: int = 0
    width: int = 0


def latest_version(model: mpb.Model, name: str = "") -> mpb.ModelVersion | None:
    """The version a name (number or alias) means; the latest for "" (or an unknown name:
    the gateway then answers NOT_FOUND itself)."""
    wanted = model.aliases.get(name, name) or model.latest_version
    for version in model.versions:
        if version.version == wanted:
            return version
    return model.versions[-1] if model.versions else None


def input_spec(version: mpb.ModelVersion) -> InputSpec | None:
    if not version.inputs:
        return None
    first = version.inputs[0]
    shape = list(first.shape)
    sample = shape[1:]
    height = width = 0
    if first.datatype.startswith("FP") and len(sample) in (2, 3) and (
            len(sample) == 2 or sample[0] == 1) and min(sample[-2:]) > 0:
        height, width = sample[-2], sample[-1]
    return InputSpec(first.name, first.datatype, shape, height, width)


def read_npy(body: bytes, spec: InputSpec) -> np.ndarray:
    """An .npy file as the model's input: its datatype, a batch axis added when missing."""
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InvalidArgument(f"not an .npy file: {err}",
                              violations=(FieldViolation("file", "not .npy"),)) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise InvalidArgument("the .npy file must hold one numeric array")
    sample = spec.shape[1:]
    if spec.height and array.size == spec.height * spec.width:  # a drawing: H x W
        array = array.reshape([1, *sample])
    elif array.ndim == len(spec.shape) - 1:
        array = array[np.newaxis]
    dtype = NUMPY_DTYPES.get(spec.datatype)
    return np.asarray(array, dtype=dtype)


def outputs_summary(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each output's shape and first row; for a [batch, classes] first output, the predicted
    class and the softmax probabilities of the first row."""
    shown = [{"name": name, "shape": list(a.shape),
              "values": np.asarray(a[0] if a.ndim > 1 else a).ravel()[:MAX_SHOWN].tolist()}
             for name, a in outputs.items()]
    first = next(iter(outputs.values()), None)
    summary: dict[str, Any] = {"outputs": shown, "predicted": None, "probabilities": []}
    if first is not None and first.ndim == 2 and first.dtype.kind == "f":
        row = first[0].astype(np.float64)
        exp = np.exp(row - row.max())
        summary.update(predicted=int(row.argmax()), probabilities=(exp / exp.sum()).tolist())
    return summary


def heatmap(explanation: Explanation, inputs: np.ndarray, spec: InputSpec) -> dict[str, Any]:
    """The first row's attributions over its input, both as [height][width] grids."""
    attributions = explanation.attributions.get(spec.name)
    if attributions is None:
        attributions = next(iter(explanation.attributions.values()))
    size = (spec.height, spec.width) if spec.height else (1, -1)
    grid = np.asarray(attributions[0], np.float64).reshape(size)
    row = np.asarray(inputs[0], np.float64).reshape(grid.shape)
    deltas = explanation.convergence_deltas
    return {"method": explanation.method, "target": int(explanation.targets[0]),
            "target_output": float(explanation.target_outputs[0]),
            "convergence_delta": float(deltas[0]) if deltas.size else None,
            "attributions": grid.tolist(), "input": row.tolist()}
