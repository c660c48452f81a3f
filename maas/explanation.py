"""Explain requests of the SDK built from numpy values, and their attributions read back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from maas import tensors
from maas.errors import FieldViolation, InvalidArgument
from maas.messages import submit_request
from maas.v1 import inference_service_pb2 as ipb

# Method names of the SDK and the CLI.
METHODS: dict[str, ipb.ExplainMethod.ValueType] = {
    "ig": ipb.EXPLAIN_METHOD_INTEGRATED_GRADIENTS,
    "integrated_gradients": ipb.EXPLAIN_METHOD_INTEGRATED_GRADIENTS,
    "saliency": ipb.EXPLAIN_METHOD_SALIENCY,
}


@dataclass(frozen=True)
class Explanation:
    """Attributions by input name (`tokens`: one value per token) and, per row, the class
    explained, f(input) and f(baseline) of it, and Integrated Gradients' convergence delta
    (sum of the row's attributions minus the output difference; empty for saliency)."""

    model_version: str
    method: str
    attributions: dict[str, np.ndarray]
    targets: np.ndarray
    target_outputs: np.ndarray
    baseline_outputs: np.ndarray
    convergence_deltas: np.ndarray


def _tensors(values: Mapping[str, Any]) -> list[ipb.Tensor]:
    return list(submit_request("", values, "", (), 0, "", None).inputs)


def explain_request(model: str, inputs: Mapping[str, Any], version: str = "",
                    method: str = "ig", target: int | None = None,
                    baselines: Mapping[str, Any] | None = None,
                    n_steps: int = 0) -> ipb.ExplainRequest:
    if method not in METHODS:
        raise InvalidArgument(f"unknown explanation method {method!r}; use one of "
                              f"{sorted(METHODS)}", violations=(FieldViolation("method",
                                                                               "unknown"),))
    request = ipb.ExplainRequest(model=model, model_version=version, method=METHODS[method],
                                 inputs=_tensors(inputs), baselines=_tensors(baselines or {}),
                                 n_steps=n_steps)
    if target is not None:
        request.target = target
    return request


def explanation_of(response: ipb.ExplainResponse) -> Explanation:
    method = ("saliency" if response.method == ipb.EXPLAIN_METHOD_SALIENCY
              else "integrated_gradients")
    return Explanation(
        model_version=response.model_version, method=method,
        attributions={t.name: tensors.from_raw(t.raw, t.datatype, t.shape)
                      for t in response.attributions},
        targets=np.array(response.targets, np.int64),
        target_outputs=np.array(response.target_outputs, np.float64),
        baseline_outputs=np.array(response.baseline_outputs, np.float64),
        convergence_deltas=np.array(response.convergence_deltas, np.float64))
