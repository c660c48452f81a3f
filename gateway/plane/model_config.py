"""Triton's ModelConfig of a model version: its tensors with Triton's element types, its
batching and whether it is decoupled (tritonclient's `get_model_config`).

A model whose every tensor is batched along its first dimension (-1) reports
`max_batch_size` = MAAS_MAX_BATCH_SIZE and its dims without that dimension, as Triton does;
any other reports 0 and its whole shapes. A generative model (runtime/generation_spec.py) is
decoupled: its configuration lists the text interface Triton's LLM backends use
(`text_input` → `text_output`, one response per token over ModelStreamInfer); the
`tokens`/`lengths` → `logits` tensors that plain ModelInfer also serves are in ModelMetadata.
"""

from __future__ import annotations

from collections.abc import Sequence

from maas.inference import grpc_service_pb2 as pb
from maas.v1.model_service_pb2 import ModelVersion, TensorSpec
from runtime import generation_spec as spec

BACKEND = "pytorch"
# v2 datatype string -> Triton's DataType (BYTES is TYPE_STRING there).
DATA_TYPES = {"BOOL": pb.TYPE_BOOL, "UINT8": pb.TYPE_UINT8, "UINT16": pb.TYPE_UINT16,
              "UINT32": pb.TYPE_UINT32, "UINT64": pb.TYPE_UINT64, "INT8": pb.TYPE_INT8,
              "INT16": pb.TYPE_INT16, "INT32": pb.TYPE_INT32, "INT64": pb.TYPE_INT64,
              "FP16": pb.TYPE_FP16, "FP32": pb.TYPE_FP32, "FP64": pb.TYPE_FP64,
              "BYTES": pb.TYPE_STRING, "BF16": pb.TYPE_BF16}
# The decoupled text interface: (name, type, dims, optional).
TEXT_INPUTS = ((spec.TEXT_INPUT, pb.TYPE_STRING, (1,), False),
               (spec.MAX_TOKENS_INPUT, pb.TYPE_INT32, (1,), True),
               (spec.TEMPERATURE_INPUT, pb.TYPE_FP32, (1,), True),
               (spec.TOP_K_INPUT, pb.TYPE_INT32, (1,), True),
               (spec.TOP_P_INPUT, pb.TYPE_FP32, (1,), True),
               (spec.SEED_INPUT, pb.TYPE_UINT64, (1,), True),
               (spec.STOP_INPUT, pb.TYPE_STRING, (-1,), True),
               (spec.STREAM_INPUT, pb.TYPE_BOOL, (1,), True))


def model_config(name: str, version: ModelVersion, platform: str,
                 max_batch_size: int) -> pb.ModelConfig:
    config = pb.ModelConfig(name=name, platform=platform, backend=BACKEND)
    config.parameters["version"].string_value = version.version
    config.parameters["architecture"].string_value = version.architecture or "archive"
    if spec.is_generative(version):
        config.model_transaction_policy.decoupled = True
        for input_name, data_type, dims, optional in TEXT_INPUTS:
            config.input.add(name=input_name, data_type=data_type, dims=dims, optional=optional)
        config.output.add(name=spec.TEXT_OUTPUT, data_type=pb.TYPE_STRING, dims=(1,))
        return config
    tensors = [*version.inputs, *version.outputs]
    is_batched = bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)
    config.max_batch_size = max_batch_size if is_batched else 0
    skip = 1 if is_batched else 0
    for t in version.inputs:
        config.input.add(name=t.name, data_type=_data_type(t), dims=_dims(t.shape, skip))
    for t in version.outputs:
        config.output.add(name=t.name, data_type=_data_type(t), dims=_dims(t.shape, skip))
    return config


def _data_type(tensor: TensorSpec) -> pb.DataType.ValueType:
    return DATA_TYPES.get(tensor.datatype, pb.TYPE_INVALID)


def _dims(shape: Sequence[int], skip: int) -> list[int]:
    return list(shape[skip:])
