"""Resumable model uploads against a real gateway: a broken stream continues where the gateway
stands (by hand and by the SDK through a proxy that drops the connection); bad resumes get
the right status; a wrong file leaves no version and no bytes; expired uploads go."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from safetensors.numpy import save

import maas
from maas.api_keys import ensure_key_file
from maas.model_files import RESUMABLE_FROM_BYTES
from maas.v1 import model_service_pb2 as mpb
from maas.v1.model_service_pb2_grpc import ModelServiceStub
from tests.inprocess import mlp_weights, running_gateway

pytestmark = pytest.mark.timeout(60)
DATA = mlp_weights()
SHA = hashlib.sha256(DATA).hexdigest()
CHUNK = 32 * 1024
CHUNKS = [DATA[i:i + CHUNK] for i in range(0, len(DATA), CHUNK)]


class Gateway:
    def __init__(self, target: str, admin_key: str, uploads: Path) -> None:
        self.target, self.admin_key, self.uploads = target, admin_key, uploads
        with maas.Client(target, api_key=admin_key) as admin:
            self.keys = {t: admin.create_key(t, ["infer", "train"]).api_key for t in "ab"}

    @contextlib.contextmanager
    def stub(self, tenant: str = "a") -> Iterator[tuple[ModelServiceStub, tuple[tuple[str,
                                                                                    str]]]]:
        with grpc.insecure_channel(self.target) as channel:
            yield ModelServiceStub(channel), (("authorization", f"Bearer {self.keys[tenant]}"),)


@pytest.fixture
def gateway(redis_url: str, tmp_path: Path) -> Iterator[Gateway]:
    admin_key = ensure_key_file(tmp_path / "admin.key")
    with running_gateway(redis_url, tmp_path / "data", auth="on", upload_ttl_s=1.0,
                         admin_key_file=str(tmp_path / "admin.key")) as port:
        yield Gateway(f"127.0.0.1:{port}", admin_key, tmp_path / "data" / "artifacts" / "uploads")


def _start(name: str, **over: object) -> mpb.UploadModelStart:
    fields: dict[str, object] = {"model": mpb.RegisterModelRequest(name=name, architecture="mlp"),
                                 "size_bytes": len(DATA), "sha256": SHA}
    fields.update(over)
    return mpb.UploadModelStart(**fields)  # type: ignore[arg-type]


def _messages(start: mpb.UploadModelStart, chunks: list[bytes],
              hold: threading.Event | None = None) -> Iterator[mpb.UploadModelRequest]:
    yield mpb.UploadModelRequest(start=start)
    for chunk in chunks:
        yield mpb.UploadModelRequest(chunk=chunk)
    if hold is not None:
        hold.wait(10)


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code(), caught.value.details() or ""


def test_a_cancelled_upload_resumes_and_registers_once(gateway: Gateway) -> None:
    with gateway.stub() as (stub, md):
        upload = stub.CreateModelUpload(mpb.CreateModelUploadRequest(
            start=_start("resumed")), metadata=md, timeout=10).upload
        assert upload.received_bytes == 0 and upload.expire_time.seconds > time.time()
        start = _start("resumed", upload_id=upload.upload_id)
        hold = threading.Event()
        call = stub.UploadModel.future(_messages(start, CHUNKS[:3], hold), metadata=md,
                                       timeout=20)
        get = mpb.GetModelUploadRequest(upload_id=upload.upload_id)
        deadline = time.monotonic() + 10
        while stub.GetModelUpload(get, metadata=md, timeout=5).upload.received_bytes < 3 * CHUNK:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        call.cancel()
        hold.set()
        assert stub.GetModelUpload(get, metadata=md, timeout=5).upload.received_bytes == 3 * CHUNK
        start.offset = 3 * CHUNK
        deadline = time.monotonic() + 10
        while True:  # the cancelled stream lets go of the upload within moments
            try:
                version = stub.UploadModel(_messages(start, CHUNKS[3:]), metadata=md,
                                           timeout=20).model_version
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert version.weights_sha256 == SHA and version.weights_bytes == len(DATA)
        assert [v.version for v in stub.GetModel(mpb.GetModelRequest(name="resumed"),
                                                 metadata=md, timeout=5).model.versions] == ["1"]
        assert _code(lambda: stub.GetModelUpload(get, metadata=md, timeout=5))[0] \
            == grpc.StatusCode.NOT_FOUND
    assert not list(gateway.uploads.glob(f"{upload.upload_id}.*"))


def test_bad_resumes_name_the_field(gateway: Gateway) -> None:
    with gateway.stub() as (stub, md), gateway.stub("b") as (other, md_b):
        upload = stub.CreateModelUpload(mpb.CreateModelUploadRequest(
            start=_start("bad-resume")), metadata=md, timeout=10).upload
        uid = upload.upload_id
        cases = [
            (stub, md, _start("bad-resume", upload_id=uid, offset=CHUNK), CHUNKS[1:],
             grpc.StatusCode.FAILED_PRECONDITION, "start.offset is 32768; upload"),
            (stub, md, _start("bad-resume", upload_id=uid, sha256="1" * 64), CHUNKS,
             grpc.StatusCode.FAILED_PRECONDITION, "start.sha256 differs"),
            (stub, md, _start("bad-resume", upload_id=uid, size_bytes=len(DATA) + 1), CHUNKS,
             grpc.StatusCode.FAILED_PRECONDITION, "start.size_bytes differs"),
            (stub, md, _start("bad-resume", upload_id="0" * 32), CHUNKS,
             grpc.StatusCode.NOT_FOUND, "is not known"),
            (stub, md, _start("bad-resume", upload_id="../../etc"), CHUNKS,
             grpc.StatusCode.INVALID_ARGUMENT, "start.upload_id"),
            (other, md_b, _start("bad-resume", upload_id=uid), CHUNKS,
             grpc.StatusCode.NOT_FOUND, "is not known"),
            (stub, md, _start("bad-resume", upload_id=uid), [*CHUNKS, b"x"],
             grpc.StatusCode.INVALID_ARGUMENT, "goes past start.size_bytes"),
        ]
        for s, m, start, chunks, code, words in cases:
            got, details = _code(lambda s=s, m=m, start=start, chunks=chunks: s.UploadModel(
                _messages(start, chunks), metadata=m, timeout=10))
            assert (got, words in details) == (code, True), details
        get = mpb.GetModelUploadRequest(upload_id=uid)
        assert _code(lambda: other.GetModelUpload(get, metadata=md_b, timeout=5))[0] \
            == grpc.StatusCode.NOT_FOUND
        # the refusals above kept what arrived: the upload still completes
        held = stub.GetModelUpload(get, metadata=md, timeout=5).upload.received_bytes
        start = _start("bad-resume", upload_id=uid, offset=held)
        version = stub.UploadModel(_messages(start, [DATA[held:]]), metadata=md,
                                   timeout=10).model_version
        assert version.weights_sha256 == SHA


def test_a_wrong_file_leaves_no_version_and_no_bytes(gateway: Gateway) -> None:
    with gateway.stub() as (stub, md):
        upload = stub.CreateModelUpload(mpb.CreateModelUploadRequest(
            start=_start("wrong", sha256="0" * 64)), metadata=md, timeout=10).upload
        start = _start("wrong", sha256="0" * 64, upload_id=upload.upload_id)
        code, details = _code(lambda: stub.UploadModel(_messages(start, CHUNKS), metadata=md,
                                                       timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "start.sha256" in details
        assert _code(lambda: stub.GetModel(mpb.GetModelRequest(name="wrong"), metadata=md,
                                           timeout=5))[0] == grpc.StatusCode.NOT_FOUND
    assert not list(gateway.uploads.glob(f"{upload.upload_id}.*"))


def test_an_upload_expires_after_the_ttl(gateway: Gateway) -> None:
    with gateway.stub() as (stub, md):
        upload = stub.CreateModelUpload(mpb.CreateModelUploadRequest(
            start=_start("late")), metadata=md, timeout=10).upload
        assert list(gateway.uploads.glob(f"{upload.upload_id}.*"))
        time.sleep(1.3)  # MAAS_UPLOAD_TTL_S=1
        get = mpb.GetModelUploadRequest(upload_id=upload.upload_id)
        code, details = _code(lambda: stub.GetModelUpload(get, metadata=md, timeout=5))
        assert code == grpc.StatusCode.NOT_FOUND and "MAAS_UPLOAD_TTL_S" in details
    assert not list(gateway.uploads.glob(f"{upload.upload_id}.*"))


class DroppingProxy:
    """A TCP proxy to `upstream` that cuts its first connection after `cut_after` bytes
    from the client: a network that drops a stream mid-upload."""

    def __init__(self, upstream: tuple[str, int], cut_after: int) -> None:
        self.upstream, self.cut_after, self.cuts = upstream, cut_after, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
                self.connections += 1
                limit = self.cut_after if self.connections == 1 else None
                threading.Thread(target=self._pump, args=(client, server, limit),
                                 daemon=True).start()
                threading.Thread(target=self._pump, args=(server, client, None),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        moved = 0
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                moved += len(data)
                if limit is not None and moved > limit:
                    self.cuts += 1
                    break
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()


# Above RESUMABLE_FROM_BYTES (smaller uploads go in one call, not resumed).
WIDE = {"in_features": 64, "hidden": [2048, 1536], "num_classes": 10}
WIDE_DATA = save({name: np.zeros(shape, np.float32) for name, shape in {
    "layers.0.weight": (2048, 64), "layers.0.bias": (2048,), "layers.2.weight": (1536, 2048),
    "layers.2.bias": (1536,), "layers.4.weight": (10, 1536), "layers.4.bias": (10,)}.items()})


def test_the_sdk_resumes_when_the_network_drops_the_stream(gateway: Gateway) -> None:
    assert len(WIDE_DATA) >= RESUMABLE_FROM_BYTES
    host, port = gateway.target.split(":")
    proxy = DroppingProxy((host, int(port)), cut_after=len(WIDE_DATA) // 2)
    try:
        sent: list[int] = []
        with maas.Client(f"127.0.0.1:{proxy.port}", api_key=gateway.keys["a"]) as client:
            version = client.register_model("sdk-resumed", "mlp", WIDE_DATA, WIDE,
                                            progress=sent.append)
            assert [v.version for v in client.get_model("sdk-resumed").versions] == ["1"]
    finally:
        proxy.close()
    assert proxy.cuts == 1 and proxy.connections >= 2
    assert version.weights_sha256 == hashlib.sha256(WIDE_DATA).hexdigest()
    assert sum(sent) == len(WIDE_DATA)
    assert not list(gateway.uploads.iterdir())
