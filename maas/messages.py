"""Request messages of the SDK built from numpy (or torch) values, and outputs read back."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maas import tensors
from maas.inference import grpc_service_pb2 as v2
from maas.v1 import inference_service_pb2 as ipb
from maas.v1 import model_service_pb2 as mpb

# {name: (datatype, shape)} of an archive's inputs or outputs; -1 = any size.
TensorSpecs = Mapping[str, tuple[str, Sequence[int]]]


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        return value.detach().cpu().numpy()  # type: ignore[no-any-return]
    return np.asarray(value)


def infer_request(model: str, inputs: Mapping[str, Any], version: str = "",
                  outputs: Sequence[str] = (), priority: int = 0,
                  request_id: str = "") -> v2.ModelInferRequest:
    """A v2 request with raw contents (the fast path)."""
    request = v2.ModelInferRequest(model_name=model, model_version=version, id=request_id,
                                   outputs=[v2.ModelInferRequest.InferRequestedOutputTensor(
                                       name=n) for n in outputs])
    if priority:
        request.parameters["priority"].uint64_param = priority
    for name, value in inputs.items():
        array = _as_array(value)
        request.inputs.add(name=name, datatype=tensors.datatype_of(array), shape=array.shape)
        request.raw_input_contents.append(tensors.to_raw(array))
    return request


def infer_outputs(response: v2.ModelInferResponse) -> dict[str, np.ndarray]:
    return {t.name: tensors.from_raw(raw, t.datatype, t.shape)
            for t, raw in zip(response.outputs, response.raw_output_contents, strict=True)}


def submit_request(model: str, inputs: Mapping[str, Any], version: str, outputs: Sequence[str],
                   priority: int, request_id: str,
                   deadline_s: float | None) -> ipb.SubmitInferenceRequest:
    request = ipb.SubmitInferenceRequest(model=model, model_version=version,
                                         outputs=list(outputs), priority=priority,
                                         request_id=request_id,
                                         deadline_ms=int((deadline_s or 0) * 1000))
    for name, value in inputs.items():
        array = _as_array(value)
        request.inputs.add(name=name, datatype=tensors.datatype_of(array), shape=array.shape,
                           raw=tensors.to_raw(array))
    return request


def job_outputs(job: ipb.InferenceJob) -> dict[str, np.ndarray]:
    """The outputs of a SUCCEEDED asynchronous job, as arrays."""
    return {t.name: tensors.from_raw(t.raw, t.datatype, t.shape) for t in job.outputs}


def register_request(name: str, architecture: str, weights: bytes | Path | str,
                     config: Mapping[str, Any] | str | None,
                     shared: bool = False) -> mpb.RegisterModelRequest:
    data = weights if isinstance(weights, bytes) else Path(weights).read_bytes()
    config_json = config if isinstance(config, str) else json.dumps(dict(config or {}))
    return mpb.RegisterModelRequest(name=name, architecture=architecture,
                                    config_json=config_json, weights=data, shared=shared)


def archive_request(name: str, archive: bytes | Path | str, inputs: TensorSpecs,
                    outputs: TensorSpecs, shared: bool = False) -> mpb.RegisterModelRequest:
    """RegisterModel of an archive (bytes, or a path to the file)."""
    data = archive if isinstance(archive, bytes) else Path(archive).read_bytes()

    def specs(given: TensorSpecs) -> list[mpb.TensorSpec]:
        return [mpb.TensorSpec(name=n, datatype=d, shape=list(s)) for n, (d, s) in given.items()]

    return mpb.RegisterModelRequest(name=name, archive=data, inputs=specs(inputs),
                                    outputs=specs(outputs), shared=shared)
