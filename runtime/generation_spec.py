"""What a generation is, in pure Python (no torch): the bounds of its parameters, its prompt
tokens, whether a model version generates, and the v2 tensor names of a decoupled request.

The gateway checks requests with these (it never imports torch); the worker's engine
(worker/generation.py) obeys the same bounds. docs/generation.md describes the whole path.
"""

from __future__ import annotations

import json

from maas.v1.model_service_pb2 import ModelVersion
from runtime import gpt_tokens
from runtime.architectures import ARCHITECTURES

MAX_TOKENS = 4096  # most tokens one request may ask for
MAX_TEMPERATURE = 100.0
MAX_TOP_K = 100_000
MAX_STOP_STRINGS = 16
MAX_STOP_BYTES = 256
MAX_PROMPT_BYTES = 1 << 20  # checked before the model's max_len (a cheap first bound)

# The v2 (Triton) names of a decoupled generation request, as Triton's TensorRT-LLM backend
# ensemble names them (its vLLM backend shares `text_input`, `stream`, `text_output`):
# every one but text_input is optional.
TEXT_INPUT = "text_input"  # BYTES [1]: the prompt
MAX_TOKENS_INPUT = "max_tokens"  # INT32 [1] (any integer type)
TEMPERATURE_INPUT = "temperature"  # FP32 [1] (any float type)
TOP_K_INPUT = "top_k"  # INT32 [1]
TOP_P_INPUT = "top_p"  # FP32 [1]
SEED_INPUT = "random_seed"  # UINT64 [1] (any integer type)
STOP_INPUT = "stop_words"  # BYTES [n]: stop strings
STREAM_INPUT = "stream"  # BOOL [1]: false sends the whole text in one response
TEXT_OUTPUT = "text_output"  # BYTES [1]: the new text of a response
DEFAULT_V2_MAX_TOKENS = 16  # TensorRT-LLM requires max_tokens; vLLM's default is 16


def is_generative(version: ModelVersion) -> bool:
    """Whether the version is of a generative architecture (served token by token)."""
    architecture = ARCHITECTURES.get(version.architecture)
    return architecture is not None and architecture.is_generative


def max_len(version: ModelVersion) -> int:
    """The most tokens (prompt + generated) the version's model can hold."""
    config = json.loads(version.config_json or "{}")
    return int(config.get("max_len") or ARCHITECTURES["gpt"].defaults["max_len"])


def prompt_ids(prompt: str) -> list[int]:
    """The tokens a prompt is fed as: BOS, then its bytes (as the `addition` data set)."""
    return [gpt_tokens.BOS, *gpt_tokens.encode(prompt)]
