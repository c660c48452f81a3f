"""A generative model over v2 ModelStreamInfer, as Triton serves a decoupled model: a request
carrying `text_input` gets one response per token, then (when the request asked with
`triton_enable_empty_final_response`, as tritonclient's `enable_empty_final_response=True`
does) an empty response whose parameter `triton_final_response` is true. Every response
carries `triton_final_response`, false until the last.

Tensor names follow Triton's TensorRT-LLM backend (runtime/generation_spec.py): inputs
`text_input` (BYTES), optional `max_tokens`, `temperature`, `top_k`, `top_p`,
`random_seed`, `stop_words` (BYTES [n]) and `stream` (BOOL: false answers once, with the
whole text); output `text_output` (BYTES [1]). Translation only: the work is the
GenerationPlane's.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np

from gateway.plane.generation import GenerationPlane
from gateway.plane.inference import Caller
from maas import tensors
from maas.errors import FieldViolation, InvalidArgument, shown
from maas.inference import grpc_service_pb2 as pb
from maas.v1.generation_service_pb2 import FinishReason, GenerateRequest, GenerateResponse
from runtime import generation_spec as spec

FINAL = "triton_final_response"
ASK_EMPTY_FINAL = "triton_enable_empty_final_response"
InferOne = Callable[[], Awaitable[pb.ModelInferResponse]]
_NUMBERS = {spec.MAX_TOKENS_INPUT: "max_tokens", spec.TEMPERATURE_INPUT: "temperature",
            spec.TOP_K_INPUT: "top_k", spec.TOP_P_INPUT: "top_p", spec.SEED_INPUT: "seed"}


def is_generation(request: pb.ModelInferRequest) -> bool:
    """Whether a v2 request asks for a generation (it carries `text_input`)."""
    return any(t.name == spec.TEXT_INPUT for t in request.inputs)


def _strings(raw: bytes, name: str) -> list[str]:
    """The elements of a BYTES tensor's raw contents (each: 4-byte length, then bytes)."""
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise _bad(name, "raw BYTES contents end inside an element's length")
        (size,) = struct.unpack_from("<I", raw, at)
        value = raw[at + 4:at + 4 + size]
        if len(value) != size:
            raise _bad(name, "raw BYTES contents end inside an element")
        try:
            out.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise _bad(name, "is not UTF-8 text") from None
        at += 4 + size
    return out


def _bad(name: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"input {shown(name)} {why}",
                           violations=(FieldViolation(f"inputs[{shown(name)}]", why),))


def _values(request: pb.ModelInferRequest) -> dict[str, tuple[str, bytes]]:
    """Input name → (datatype, raw bytes), from raw_input_contents or typed contents."""
    out = {}
    for i, t in enumerate(request.inputs):
        if i < len(request.raw_input_contents):
            raw = request.raw_input_contents[i]
        elif t.datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(b)) + b for b in t.contents.bytes_contents)
        else:
            field = tensors.CONTENTS_FIELD.get(t.datatype, "")
            values = list(getattr(t.contents, field)) if field else []
            raw = tensors.contents_to_raw(values, t.datatype) if field else b""
        out[t.name] = (t.datatype, raw)
    return out


def _number(name: str, datatype: str, raw: bytes) -> float | int:
    if datatype not in tensors.NUMPY_DTYPES or datatype == "BYTES":
        raise _bad(name, f"must be a number tensor of one element; got {shown(datatype)}")
    try:
        array = np.frombuffer(raw, dtype=tensors.NUMPY_DTYPES[datatype])
    except ValueError:
        raise _bad(name, f"has {len(raw)} raw bytes, not whole {datatype} values") from None
    if array.size != 1:
        raise _bad(name, f"must hold one element; got {array.size}")
    return array.item()  # type: ignore[no-any-return]


def generate_request(request: pb.ModelInferRequest) -> tuple[GenerateRequest, bool]:
    """The GenerateRequest of a v2 request, and whether it streams (`stream`, default true)."""
    values = _values(request)
    datatype, raw = values[spec.TEXT_INPUT]
    prompts = _strings(raw, spec.TEXT_INPUT) if datatype == "BYTES" else []
    if len(prompts) != 1:
        raise _bad(spec.TEXT_INPUT, "must be a BYTES tensor of one element (the prompt)")
    out = GenerateRequest(model=request.model_name, model_version=request.model_version,
                          prompt=prompts[0], request_id=request.id,
                          max_tokens=spec.DEFAULT_V2_MAX_TOKENS)
    for name, field in _NUMBERS.items():
        if name in values:
            number = _number(name, *values[name])
            try:
                setattr(out, field, float(number) if field in ("temperature", "top_p")
                        else int(number))
            except ValueError:  # out of the field's range (int32 max_tokens, uint64 seed)
                raise _bad(name, f"value {shown(number)} is out of range") from None
    if spec.STOP_INPUT in values:
        out.stop.extend(_strings(values[spec.STOP_INPUT][1], spec.STOP_INPUT))
    stream = True
    if spec.STREAM_INPUT in values:
        stream = bool(_number(spec.STREAM_INPUT, *values[spec.STREAM_INPUT]))
    if "priority" in request.parameters:
        out.priority = max(0, request.parameters["priority"].int64_param)
    return out, stream


def _response(request: pb.ModelInferRequest, version: str, text: str | None,
              is_final: bool) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=request.model_name, model_version=version,
                                     id=request.id)
    if text is not None:
        data = text.encode()
        response.outputs.add(name=spec.TEXT_OUTPUT, datatype="BYTES", shape=[1])
        response.raw_output_contents.append(struct.pack("<I", len(data)) + data)
    response.parameters[FINAL].bool_param = is_final
    return response


async def stream_generation(plane: GenerationPlane, request: pb.ModelInferRequest,
                            caller: Caller, infer_one: InferOne,
                            whole: bool = False) -> AsyncIterator[pb.ModelInferResponse]:
    """The v2 responses of a request carrying `text_input` (see the module docstring); for
    a model that does not generate, `infer_one()`'s. whole=True: one response, the whole
    text (ModelInfer)."""
    if not await plane.is_generative(caller.tenant, request.model_name, request.model_version):
        yield await infer_one()
        return
    generate, is_streaming = generate_request(request)
    is_streaming = is_streaming and not whole
    ask_empty_final = not whole and (request.parameters[ASK_EMPTY_FINAL].bool_param
                                     if ASK_EMPTY_FINAL in request.parameters else False)
    texts: list[str] = []
    last: GenerateResponse | None = None
    async for chunk in plane.generate(generate, caller):
        last = chunk
        has_content = bool(chunk.token_ids or chunk.text)
        if not is_streaming:
            texts.append(chunk.text)
        elif has_content:
            yield _response(request, chunk.model_version,
                            chunk.text, chunk.HasField("final") and not ask_empty_final)
    if last is None:
        return
    if not is_streaming:
        yield _finished(_response(request, last.model_version, "".join(texts),
                                  not ask_empty_final), last)
    if ask_empty_final:
        yield _finished(_response(request, last.model_version, None, True), last)


async def whole_generation(plane: GenerationPlane, request: pb.ModelInferRequest,
                           caller: Caller, infer_one: InferOne) -> pb.ModelInferResponse:
    """ModelInfer of a request carrying `text_input`: the whole generation in one response
    (for a model that does not generate, `infer_one()`)."""
    responses = [r async for r in stream_generation(plane, request, caller, infer_one,
                                                    whole=True)]
    return responses[-1]


def _finished(response: pb.ModelInferResponse, last: GenerateResponse) -> pb.ModelInferResponse:
    """The response that ends a generation also says why (parameters clients may ignore)."""
    final = last.final
    response.parameters["maas_finish_reason"].string_param = \
        FinishReason.Name(final.finish_reason).removeprefix("FINISH_REASON_").lower()
    response.parameters["maas_completion_tokens"].int64_param = final.completion_tokens
    response.parameters["maas_prompt_tokens"].int64_param = final.prompt_tokens
    return response
