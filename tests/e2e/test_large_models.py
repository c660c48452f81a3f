"""Models bigger than any message: streamed up (UploadModel) through the SDK and the CLI,
served, streamed back (DownloadModel) into files that load without maas; the gateway's
memory stays flat while it takes them; bad streams leave nothing behind."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import maas
from maas.cli.main import main as cli_main
from maas.v1 import model_service_pb2 as mpb
from maas.v1.model_service_pb2_grpc import ModelServiceStub
from runtime.architectures import get_architecture
from tests.conftest import Cluster
from tests.model_archives import SPECS, torchscript

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
BIG = {"hidden": [4096, 4096]}  # 17.1 M parameters: 68 MB of F32, over the 64 MiB limit


@pytest.fixture(scope="module")
def big_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = get_architecture("mlp")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("big") / "big.safetensors"
    save_file(arch.build(arch.resolve_config(BIG)).state_dict(), str(path))
    assert path.stat().st_size > 64 * 1024 * 1024
    return path


def _peak_rss_kib(cluster: Cluster, name: str) -> int:
    status = Path(f"/proc/{cluster.service(name).pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmHWM:")))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_model_over_the_message_limit_registers_serves_and_downloads(
        cluster: Cluster, big_weights: Path, tmp_path: Path) -> None:
    before = _peak_rss_kib(cluster, "gateway")
    with maas.Client(cluster.target) as client:
        sent: list[int] = []
        version = client.register_model("big", "mlp", big_weights, BIG, progress=sent.append)
        assert sum(sent) == big_weights.stat().st_size
        assert version.weights_sha256 == _sha256(big_weights)
        grown_mib = (_peak_rss_kib(cluster, "gateway") - before) / 1024
        print(f"\ngateway peak RSS grew {grown_mib:.1f} MiB while taking "
              f"{big_weights.stat().st_size / 2**20:.0f} MiB")
        assert grown_mib < 64
        out = client.infer("big", {"input": np.ones((2, 64), np.float32)}, timeout_s=60)
        assert out["output"].shape == (2, 10)
        got = client.download_model("big", tmp_path / "dl")
    assert got.version == version.version
    path = tmp_path / "dl" / "model.safetensors"
    assert _sha256(path) == version.weights_sha256
    reference = load_file(str(big_weights))
    assert all(torch.equal(reference[k], v) for k, v in load_file(str(path)).items())
    manifest = json.loads((tmp_path / "dl" / "manifest.json").read_text())
    assert manifest["architecture"] == "mlp" and manifest["file"] == "model.safetensors"
    assert json.loads(manifest["config_json"])["hidden"] == [4096, 4096]


def test_the_cli_registers_and_downloads(cluster: Cluster, big_weights: Path,
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    flags = ["--target", cluster.target, "--json"]
    assert cli_main(["models", "register", "--name", "big-cli", "--architecture", "mlp",
                     "--config", json.dumps(BIG), "--weights", str(big_weights), *flags]) == 0
    registered = json.loads(capsys.readouterr().out)
    assert cli_main(["models", "download", "big-cli", "--version", registered["version"],
                     "-o", str(tmp_path / "out"), *flags]) == 0
    downloaded = json.loads(capsys.readouterr().out)
    assert _sha256(Path(downloaded["file"])) == registered["weights_sha256"]


def test_an_archive_downloads_into_a_file_torch_loads(cluster: Cluster, tmp_path: Path) -> None:
    with maas.Client(cluster.target) as client:
        client.upload_model("dl-arch", torchscript(3.0), *SPECS)
        client.download_model("dl-arch", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(tmp_path / "model.pt"))  # type: ignore[no-untyped-call]
    assert module(torch.ones(1, 4)).tolist() == [[3.0] * 4]


def _stream(start: mpb.UploadModelStart | None, chunks: list[bytes]
            ) -> Iterator[mpb.UploadModelRequest]:
    if start is not None:
        yield mpb.UploadModelRequest(start=start)
    for chunk in chunks:
        yield mpb.UploadModelRequest(chunk=chunk)


def test_bad_uploads_are_refused_and_leave_nothing(cluster: Cluster) -> None:
    arch = get_architecture("mlp")
    torch.manual_seed(0)
    data = maas_safetensors(arch.build(arch.resolve_config(None)).state_dict())
    sha = hashlib.sha256(data).hexdigest()
    model = mpb.RegisterModelRequest(name="bad-up", architecture="mlp")

    def start(**over: object) -> mpb.UploadModelStart:
        fields: dict[str, object] = {"model": model, "size_bytes": len(data), "sha256": sha}
        fields.update(over)
        return mpb.UploadModelStart(**fields)  # type: ignore[arg-type]

    cases = [
        (None, [data], grpc.StatusCode.INVALID_ARGUMENT, "start"),
        (start(sha256="0" * 64), [data], grpc.StatusCode.INVALID_ARGUMENT, "sha256"),
        (start(), [data, b"x"], grpc.StatusCode.INVALID_ARGUMENT, "past"),
        (start(), [data[:100]], grpc.StatusCode.INVALID_ARGUMENT, "ended after 100"),
        (start(size_bytes=1 << 62), [data], grpc.StatusCode.RESOURCE_EXHAUSTED,
         "MAAS_MAX_MODEL_BYTES"),
        (start(sha256="nothex"), [data], grpc.StatusCode.INVALID_ARGUMENT, "64 lowercase"),
        (start(model=mpb.RegisterModelRequest(name="bad-up", architecture="cnn")), [data],
         grpc.StatusCode.INVALID_ARGUMENT, "do not fit"),
        (start(model=mpb.RegisterModelRequest(name="", architecture="mlp")), [data],
         grpc.StatusCode.INVALID_ARGUMENT, "name"),
    ]
    with grpc.insecure_channel(cluster.target) as channel:
        stub = ModelServiceStub(channel)
        for first, chunks, code, words in cases:
            with pytest.raises(grpc.RpcError) as caught:
                stub.UploadModel(_stream(first, chunks), timeout=30)
            assert caught.value.code() == code, caught.value.details()
            assert words in (caught.value.details() or ""), caught.value.details()
    with maas.Client(cluster.target) as client, pytest.raises(maas.NotFound):
        client.get_model("bad-up")  # nothing half-registered
    uploads = cluster.local.data_dir / "artifacts" / "uploads"
    assert not list(uploads.glob("*.part")) if uploads.exists() else True


def maas_safetensors(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(state)
