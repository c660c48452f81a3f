"""Generation end to end: a real gateway, worker and redis-server, a `gpt` with random weights
registered through the SDK. maas.v1 Generate (Client, AsyncClient, CLI), the decoupled v2
ModelStreamInfer through the unmodified tritonclient, cancellation, bad input, tenants."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import redis
import torch
import tritonclient.grpc as grpcclient
from safetensors.torch import save

import maas
from maas.api_keys import ensure_key_file
from maas.cli.main import main as cli_main
from maas.generation import GenerationChunk
from runtime.gpt_nn import GPT
from runtime.queue.v1.queue_pb2 import GenerateTask
from tests.inprocess import mlp_weights, running_gateway
from tests.inprocess_worker import running_worker
from worker.generation import GenerationEngine

pytestmark = pytest.mark.timeout(90)

CONFIG = {"d_model": 32, "heads": 4, "layers": 2, "ff": 64, "max_len": 256}


def random_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(259, 32, 4, 2, 64, 256).eval()


def alone(task: GenerateTask) -> list[int]:
    """The tokens the engine makes for the task in this process (the reference)."""
    engine = GenerationEngine(random_gpt(), 1)
    engine.add("k", task)
    made: list[int] = []
    while engine.keys:
        for event in engine.step():
            made += event.token_ids
    return made


@pytest.fixture(scope="module")
def target(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("gen")
    redis_server.client().flushall()
    with running_gateway(redis_server.url, tmp) as port, \
            running_worker(redis_server.url, tmp, max_batch_size=8):
        target = f"127.0.0.1:{port}"
        with maas.Client(target) as client:
            client.register_model("adder", "gpt", save(random_gpt().state_dict()), CONFIG)
            client.register_model("mlp", "mlp", mlp_weights())
        yield target


def collect(target: str, **kw: Any) -> list[GenerationChunk]:
    with maas.Client(target, timeout_s=30) as client:
        return list(client.generate("adder", "17+25=", **kw))


def test_sdk_streams_every_token_once_as_the_engine_makes_it(target: str) -> None:
    chunks = collect(target, max_tokens=12)
    assert [c.index for c in chunks[:-1]] == list(range(len(chunks) - 1))
    ids = [t for c in chunks for t in c.token_ids]
    assert ids == alone(GenerateTask(prompt="17+25=", max_tokens=12))
    last = chunks[-1]
    assert last.finish_reason in ("length", "eos") and last.completion_tokens == len(ids)
    assert last.prompt_tokens == 7 and all(c.finish_reason is None for c in chunks[:-1])


def test_every_event_stream_expires(target: str, redis_server: Any) -> None:
    """The worker sets a job's event stream TTL at its first and last event, not per token:
    no stream of a finished generation is left without one."""
    collect(target, max_tokens=40)
    client = redis_server.client()
    try:
        streams = list(client.scan_iter(match="maas:{m:adder}:gen:*"))
        assert streams and all(client.pttl(k) > 0 for k in streams)
    finally:
        client.close()


def test_seeded_sampling_is_reproducible_through_the_queue(target: str) -> None:
    kw = {"max_tokens": 16, "temperature": 1.0, "top_k": 40, "top_p": 0.95, "seed": 11}
    first = [t for c in collect(target, **kw) for t in c.token_ids]
    assert first == [t for c in collect(target, **kw) for t in c.token_ids]
    assert first == alone(GenerateTask(prompt="17+25=", max_tokens=16, temperature=1.0,
                                       top_k=40, top_p=0.95, seed=11))


def test_async_client_and_concurrent_streams(target: str) -> None:
    async def one(client: maas.AsyncClient, n: int) -> list[int]:
        return [t async for c in client.generate("adder", "17+25=", max_tokens=n)
                for t in c.token_ids]

    async def many() -> list[list[int]]:
        async with maas.AsyncClient(target) as client:
            return await asyncio.gather(*(one(client, n) for n in (4, 20, 9, 30)))

    got = asyncio.run(many())
    for n, ids in zip((4, 20, 9, 30), got, strict=True):
        assert ids == alone(GenerateTask(prompt="17+25=", max_tokens=n))


def test_a_request_arriving_mid_generation_ends_before_the_long_one(target: str) -> None:
    async def timed(client: maas.AsyncClient, n: int, started: asyncio.Event | None,
                    ended: list[tuple[int, float]]) -> None:
        async for chunk in client.generate("adder", "x", max_tokens=n):
            if started is not None and chunk.index == 0:
                started.set()
        ended.append((n, time.monotonic()))

    async def race() -> list[tuple[int, float]]:
        ended: list[tuple[int, float]] = []
        async with maas.AsyncClient(target) as client:
            started = asyncio.Event()
            long = asyncio.create_task(timed(client, 150, started, ended))
            await started.wait()
            await timed(client, 4, None, ended)
            await long
        return ended

    assert [n for n, _ in asyncio.run(race())] == [4, 150]


def test_cli_prints_tokens(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["generate", "adder", "17+25=", "--max-tokens", "5",
                     "--target", target]) == 0
    out = capsys.readouterr()
    text = "".join(c.text for c in collect(target, max_tokens=5))
    assert out.out == text + "\n" and "tokens]" in out.err


def test_tritonclient_decoupled_stream(target: str) -> None:
    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(target)
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"17+25="], dtype=object))
    max_tokens = grpcclient.InferInput("max_tokens", [1], "INT32")
    max_tokens.set_data_from_numpy(np.array([6], dtype=np.int32))
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer("adder", [text, max_tokens], request_id="r1",
                                  enable_empty_final_response=True)
        got = []
        while True:
            result, error = results.get(timeout=20)
            assert error is None, error
            response = result.get_response()
            assert response.id == "r1"
            if response.parameters["triton_final_response"].bool_param:
                assert result.as_numpy("text_output") is None
                break
            got.append(result.as_numpy("text_output")[0].decode())
    finally:
        client.stop_stream()
        client.close()
    expected = [c for c in collect(target, max_tokens=6) if c.token_ids]
    assert len(got) == len(expected) and "".join(got) == "".join(c.text for c in expected)


def test_tritonclient_model_infer_gets_the_whole_text(target: str) -> None:
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"17+25="], dtype=object))
    max_tokens = grpcclient.InferInput("max_tokens", [1], "INT32")
    max_tokens.set_data_from_numpy(np.array([6], dtype=np.int32))
    with grpcclient.InferenceServerClient(target) as client:
        result = client.infer("adder", [text, max_tokens])
    expected = "".join(c.text for c in collect(target, max_tokens=6))
    assert result.as_numpy("text_output")[0].decode() == expected
    response = result.get_response()
    assert response.parameters["triton_final_response"].bool_param
    assert response.parameters["maas_completion_tokens"].int64_param == 6 or \
        response.parameters["maas_finish_reason"].string_param == "eos"


def test_cancel_mid_stream_frees_the_slot(target: str, redis_server: Any) -> None:
    with maas.Client(target, timeout_s=30) as client:
        stream = client.generate("adder", "x", max_tokens=250, request_id="to-cancel")
        first = next(stream)
        assert first.index == 0
        stream.close()  # cancels the call
    r = redis_server.client()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = {r.hget(k, "state") for k in r.scan_iter("maas:{m:adder}:job:*")}
        if b"RUNNING" not in states:
            break
        time.sleep(0.05)
    assert b"RUNNING" not in states and b"CANCELLED" in states
    assert len(collect(target, max_tokens=3)) >= 2  # the worker serves on


@pytest.mark.parametrize(("kw", "field"), [
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 10**6}, "max_tokens"),
    ({"temperature": -1.0}, "temperature"), ({"top_p": 1.5}, "top_p"),
    ({"top_p": 0.0}, "top_p"), ({"stop": ["x"] * 100}, "stop"),
    ({"prompt": "9" * 300}, "prompt"), ({"prompt": ""}, "prompt"),
])
def test_bad_input_is_invalid_argument_naming_the_field(target: str, kw: dict[str, Any],
                                                        field: str) -> None:
    prompt = kw.pop("prompt", "17+25=")
    with maas.Client(target) as client, pytest.raises(maas.InvalidArgument) as caught:
        list(client.generate("adder", prompt, **{"max_tokens": 4, **kw}))
    assert [v.field for v in caught.value.violations] == [field]


def test_unknown_or_non_generative_model(target: str) -> None:
    with maas.Client(target) as client:
        with pytest.raises(maas.ModelNotFound):
            list(client.generate("nope", "1+1="))
        with pytest.raises(maas.MaasError) as caught:
            list(client.generate("mlp", "1+1="))
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_another_tenants_model_is_not_found(redis_server: Any, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAAS_API_KEY", raising=False)
    redis_url = redis_server.url.removesuffix("/0") + "/1"  # beside the module's cluster
    redis.Redis.from_url(redis_url).flushdb()
    admin_key = ensure_key_file(tmp_path / "admin.key")
    with running_gateway(redis_url, tmp_path / "data", auth="on",
                         admin_key_file=str(tmp_path / "admin.key")) as port:
        target = f"127.0.0.1:{port}"
        with maas.Client(target, api_key=admin_key) as admin:
            acme = admin.create_key("acme", ["infer", "train"]).api_key
            globex = admin.create_key("globex", ["infer", "train"]).api_key
        with maas.Client(target, api_key=acme) as client:
            client.register_model("mine", "gpt", save(random_gpt().state_dict()), CONFIG)
        with maas.Client(target, api_key=globex) as client:
            with pytest.raises(maas.ModelNotFound):
                list(client.generate("mine", "1+1="))
            with pytest.raises(maas.ModelNotFound):
                client.model_config("mine")
        with maas.Client(target, api_key=acme) as client:
            assert client.model_config("mine").model_transaction_policy.decoupled


def test_model_config_says_which_models_are_decoupled(target: str) -> None:
    """Triton's ModelConfig through the unmodified tritonclient: the gpt model is decoupled
    with Triton's LLM text tensors; the mlp batches along its first dimension."""
    client = grpcclient.InferenceServerClient(target)
    try:
        adder = client.get_model_config("adder").config
        mlp = client.get_model_config("mlp").config
        metadata = client.get_server_metadata()
        with pytest.raises(grpcclient.InferenceServerException, match=r"StatusCode\.NOT_FOUND"):
            client.get_model_config("nope")
    finally:
        client.close()
    assert adder.model_transaction_policy.decoupled and adder.max_batch_size == 0
    inputs = {i.name: i for i in adder.input}
    assert not inputs["text_input"].optional and inputs["max_tokens"].optional
    assert inputs["text_input"].data_type == grpcclient.model_config_pb2.TYPE_STRING
    assert [(o.name, list(o.dims)) for o in adder.output] == [("text_output", [1])]
    assert adder.backend == "pytorch" and adder.parameters["architecture"].string_value == "gpt"
    assert not mlp.model_transaction_policy.decoupled and mlp.max_batch_size == 32
    [x] = mlp.input
    assert (x.name, x.data_type, list(x.dims)) == ("input", grpcclient.model_config_pb2.TYPE_FP32,
                                                   [64])
    assert "model_configuration" in metadata.extensions
    with maas.Client(target) as sdk:
        assert sdk.model_config("mlp", "1") == sdk.model_config("mlp")
