"""Model lifecycle against a real redis-server, a real gateway and a worker (which verifies
uploaded archives in its sandboxed runners): aliases, version deletion, archive uploads and
Triton's repository RPCs with tritonclient."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import maas
from maas.api_keys import ensure_key_file
from maas.errors import (
    InvalidArgument,
    ModelAliasNotFound,
    ModelVersionInUse,
    ModelVersionNotFound,
)
from maas.inference import grpc_service_pb2 as v2
from maas.v1.model_service_pb2 import ModelFormat, ModelVersion
from scheduler.registry import ModelRegistry
from tests.inprocess import running_gateway
from tests.inprocess_worker import running_worker
from tests.model_archives import CONFIG, SPECS, exported, torchscript

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def archives() -> dict[str, bytes]:
    return {"ts1": torchscript(1.0), "ts2": torchscript(2.0), "pt2": exported(3.0)}


@pytest.fixture
def target(redis_url: str, tmp_path: Path) -> Iterator[str]:
    with running_gateway(redis_url, tmp_path) as port, running_worker(redis_url, tmp_path):
        yield f"127.0.0.1:{port}"


@pytest.fixture
async def registry(redis_url: str) -> AsyncIterator[ModelRegistry]:
    client = aioredis.Redis.from_url(redis_url)
    yield ModelRegistry(client)
    await client.aclose()


def _status(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    code = str(caught.value.status()).removeprefix("StatusCode.")
    return getattr(grpc.StatusCode, code), str(caught.value.message())


async def test_alias_set_move_delete_in_the_registry(registry: ModelRegistry) -> None:
    for _ in range(3):
        await registry.add_version(ModelVersion(model="m", platform="pytorch"))
    assert await registry.set_alias("m", "production", "1") == ""
    assert (await registry.resolve("m", "production")).version == "1"
    assert await registry.set_alias("m", "production", "3") == "1"  # moved
    assert await registry.set_alias("m", "staging", "production") == ""  # alias of an alias
    assert (await registry.resolve("m", "production")).version == "3"
    assert await registry.aliases("m") == {"production": "3", "staging": "3"}
    with pytest.raises(ModelVersionInUse) as caught:
        await registry.delete_version("m", "3")
    assert "'production', 'staging'" in caught.value.message
    await registry.delete_alias("m", "staging")
    await registry.set_alias("m", "production", "2")
    await registry.delete_version("m", "3")  # the latest: latest moves back to 2
    assert (await registry.resolve("m")).version == "2"
    with pytest.raises(ModelVersionNotFound):
        await registry.resolve("m", "3")
    with pytest.raises(ModelAliasNotFound) as missing:
        await registry.resolve("m", "canary")
    assert "its aliases: production" in missing.value.message
    await registry.delete_alias("m", "production")
    await registry.delete_version("m", "1")
    with pytest.raises(ModelVersionInUse, match="only version"):
        await registry.delete_version("m", "2")


async def test_bad_aliases_and_versions(registry: ModelRegistry) -> None:
    await registry.add_version(ModelVersion(model="m"))
    for alias in ("latest", "1", "9x", "a b", "x" * 64, ""):
        with pytest.raises(InvalidArgument):
            await registry.set_alias("m", alias, "1")
    with pytest.raises(ModelVersionNotFound):
        await registry.set_alias("m", "prod", "7")
    with pytest.raises(InvalidArgument):
        await registry.delete_version("m", "prod")
    with pytest.raises(ModelAliasNotFound):
        await registry.delete_alias("m", "prod")


def test_sdk_aliases_and_uploads(target: str, archives: dict[str, bytes]) -> None:
    with maas.Client(target) as client:
        v1 = client.upload_model("aff", archives["ts1"], *SPECS)
        v2_ = client.upload_model("aff", archives["pt2"], *SPECS)
        assert (v1.version, v1.format, v1.platform) == (
            "1", ModelFormat.MODEL_FORMAT_TORCHSCRIPT, "pytorch_libtorch")
        assert (v2_.version, v2_.format) == ("2", ModelFormat.MODEL_FORMAT_TORCH_EXPORT)
        assert dict(client.set_model_alias("aff", "production", 1).aliases) == {
            "production": "1"}
        meta = client.model_metadata("aff", "production")  # an alias wherever a version goes
        assert [t.name for t in meta.inputs] == ["x"] and list(meta.inputs[0].shape) == [-1, 4]
        with pytest.raises(ModelVersionInUse) as caught:
            client.delete_model_version("aff", 1)
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "alias 'production' points to it" in caught.value.message
        assert dict(client.get_model("aff").aliases) == {"production": "1"}
        assert [dict(m.aliases) for m in client.list_models()] == [{"production": "1"}]
        client.set_model_alias("aff", "production", 2)
        model = client.delete_model_version("aff", 1)
        assert [v.version for v in model.versions] == ["2"]
        with pytest.raises(maas.NotFound):
            client.set_model_alias("aff", "production", 1)
        with pytest.raises(maas.NotFound):
            client.set_model_alias("nope", "production", 1)
        with pytest.raises(InvalidArgument) as bad:
            client.set_model_alias("aff", "latest", 2)
        assert [v.field for v in bad.value.violations] == ["alias"]
        assert client.delete_model_alias("aff", "production").aliases == {}


def test_sdk_refuses_bad_archives(target: str, archives: dict[str, bytes]) -> None:
    with maas.Client(target) as client:
        for data, spec, why in ((b"not a zip", SPECS, "not a zip file"),
                                (_pickled_export(archives["pt2"]), SPECS, "pickled"),
                                (archives["ts1"], ({"x": ("FP99", [-1, 4])}, SPECS[1]),
                                 "datatype"),
                                (archives["ts1"], ({}, SPECS[1]), "inputs")):
            with pytest.raises(InvalidArgument) as caught:
                client.upload_model("bad", data, *spec)
            assert why in str(caught.value.message) + str(caught.value.violations)
        assert client.list_models() == []


def _pickled_export(data: bytes) -> bytes:
    """The archive with its weights marked as pickled (torch.export.load would unpickle)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(body)
                for entry in config["config"].values():
                    entry["use_pickle"] = True
                body = json.dumps(config).encode()
            dst.writestr(info.filename, body)
    return out.getvalue()


def test_tritonclient_repository_index_unload_load(target: str,
                                                   archives: dict[str, bytes]) -> None:
    client = grpcclient.InferenceServerClient(target)
    client.load_model("aff", config=CONFIG, files={"file:1/model.pt": archives["ts1"]})
    client.load_model("aff", config=CONFIG, files={"file:1/model.pt2": archives["pt2"]})
    index = client.get_model_repository_index()
    assert [(m.name, m.version, m.state) for m in index.models] == [
        ("aff", "1", "READY"), ("aff", "2", "READY")]
    client.unload_model("aff")
    assert not client.is_model_ready("aff")
    unloaded = client.get_model_repository_index().models
    assert {m.state for m in unloaded} == {"UNAVAILABLE"}
    assert "RepositoryModelLoad" in unloaded[0].reason
    ready_only = client._client_stub.RepositoryIndex(v2.RepositoryIndexRequest(ready=True))
    assert list(ready_only.models) == []
    inp = grpcclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32))
    code, message = _status(lambda: client.infer("aff", [inp]))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "unloaded" in message and "load_model('aff')" in message
    client.load_model("aff")
    assert {m.state for m in client.get_model_repository_index().models} == {"READY"}


def test_tritonclient_repository_errors(target: str, archives: dict[str, bytes]) -> None:
    client = grpcclient.InferenceServerClient(target)
    not_found = grpc.StatusCode.NOT_FOUND
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[Callable[[], object], grpc.StatusCode, str]] = [
        (lambda: client.load_model("nope"), not_found, "not registered"),
        (lambda: client.unload_model("nope"), not_found, "not registered"),
        (lambda: client.load_model("bad name!"), invalid, "model name"),
        (lambda: client.load_model("x", config=CONFIG), invalid, "taken only with a file"),
        (lambda: client.load_model("x", config=CONFIG, files={"file:1/model.onnx": b"x"}),
         invalid, "file:<version>/model.pt"),
        (lambda: client.load_model("x", config=CONFIG, files={"file:1/model.pt": b"x"}),
         invalid, "not a zip file"),
        (lambda: client.load_model("x", config=CONFIG,
                                   files={"file:1/model.pt": archives["pt2"]}),
         invalid, "the archive is torch.export"),
        (lambda: client.load_model("x", config="{", files={"file:1/model.pt": archives["ts1"]}),
         invalid, "not JSON"),
        (lambda: client.load_model("x", config='{"input": []}',
                                   files={"file:1/model.pt": archives["ts1"]}),
         invalid, "config.input: give 1 to 64 tensors"),
        (lambda: client.load_model("x", config=json.dumps({**json.loads(CONFIG), "output": 1}),
                                   files={"file:1/model.pt": archives["ts1"]}),
         invalid, "'output' must be a list"),
        (lambda: client.load_model("x", files={"file:1/model.pt": archives["ts1"]}),
         invalid, "config"),
    ]
    for call, code, text in cases:
        got, message = _status(call)
        assert (got, text in message) == (code, True), message
    request = v2.RepositoryModelUnloadRequest(model_name="x")
    request.parameters["force"].bool_param = True
    with pytest.raises(grpc.RpcError) as caught:
        client._client_stub.RepositoryModelUnload(request)
    assert caught.value.code() == invalid and "unknown parameter" in caught.value.details()
    assert client.get_model_repository_index().models == []


def test_aliases_and_unload_follow_tenancy(redis_url: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           archives: dict[str, bytes]) -> None:
    """A tenant changes its own models; a shared one needs admin; others' are NOT_FOUND."""
    monkeypatch.delenv("MAAS_API_KEY", raising=False)
    admin_key = ensure_key_file(tmp_path / "admin.key")
    with running_gateway(redis_url, tmp_path / "data", auth="on",
                         admin_key_file=str(tmp_path / "admin.key")) as port, \
            running_worker(redis_url, tmp_path / "data"):
        target = f"127.0.0.1:{port}"
        with maas.Client(target, api_key=admin_key) as admin:
            admin.upload_model("shared-m", archives["ts1"], *SPECS, shared=True)
            acme = admin.create_key("acme", ["infer", "train"]).api_key
            reader = admin.create_key("acme", ["infer"]).api_key
            other = admin.create_key("other", ["infer", "train"]).api_key
        with maas.Client(target, api_key=acme) as client:
            client.upload_model("own", archives["ts1"], *SPECS)
            assert client.set_model_alias("own", "production", 1).aliases == {"production": "1"}
            assert client.model_metadata("own", "production").name == "own"
            with pytest.raises(maas.PermissionDenied, match="admin"):
                client.set_model_alias("shared-m", "production", 1)
        with maas.Client(target, api_key=reader) as client, \
                pytest.raises(maas.PermissionDenied, match="train"):
            client.delete_model_alias("own", "production")
        with maas.Client(target, api_key=other) as client:
            with pytest.raises(maas.ModelNotFound):
                client.delete_model_version("own", 1)
            stub = grpcclient.InferenceServerClient(target)
            headers = {"authorization": f"Bearer {other}"}
            assert _status(lambda: stub.unload_model("own", headers=headers))[0] == \
                grpc.StatusCode.NOT_FOUND
            names = {m.name for m in stub.get_model_repository_index(headers=headers).models}
            assert names == {"shared-m"}
