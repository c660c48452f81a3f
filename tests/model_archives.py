"""Small TorchScript and torch.export archives for the model-lifecycle tests."""

from __future__ import annotations

import io
import json
import warnings

import torch


class Affine(torch.nn.Module):
    """y = x * scale + shift, elementwise on [batch, 4]: each version answers differently."""

    def __init__(self, scale: float, shift: float = 0.0) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.full((4,), scale))
        self.shift = torch.nn.Parameter(torch.full((4,), shift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def torchscript(scale: float, shift: float = 0.0) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit.* is deprecated in favour of torch.export
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(Affine(scale, shift).eval()), buffer)
    return buffer.getvalue()


def exported(scale: float, shift: float = 0.0) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(Affine(scale, shift).eval(), (torch.zeros(2, 4),),
                                  dynamic_shapes={"x": {0: batch}})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


# Triton's config for both (max_batch_size > 0: the batch dimension is implied).
CONFIG = json.dumps({"max_batch_size": 64,
                     "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
                     "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]})
SPECS = ({"x": ("FP32", [-1, 4])}, {"y": ("FP32", [-1, 4])})
