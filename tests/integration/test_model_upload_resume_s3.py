"""Resumable model uploads with the artifact store in a bucket (moto's real S3 server): two
gateways share Redis and the bucket but no directory. A stream broken on gateway A resumes on
gateway B from the offset B reports and registers a version whose bytes download whole; a
wrong offset, another tenant's id, a second concurrent stream, a wrong file and an expired
upload get the directory store's statuses, and nothing is left in the bucket."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import grpc
import numpy as np
import pytest
from safetensors.numpy import save

import maas
from gateway.upload_sessions_s3 import PART_BYTES
from maas.api_keys import ensure_key_file
from maas.v1 import model_service_pb2 as mpb
from maas.v1.model_service_pb2_grpc import ModelServiceStub
from tests.inprocess import running_gateway
from tests.s3_server import S3Server, serving_bucket

pytestmark = pytest.mark.timeout(90)
BUCKET = "maas-uploads"
# An mlp over one part and a half (8 MiB parts: moto, like S3, refuses smaller non-last ones).
WIDE = {"in_features": 64, "hidden": [2048, 1536], "num_classes": 10}
DATA = save({name: np.ones(shape, np.float32) for name, shape in {
    "layers.0.weight": (2048, 64), "layers.0.bias": (2048,), "layers.2.weight": (1536, 2048),
    "layers.2.bias": (1536,), "layers.4.weight": (10, 1536), "layers.4.bias": (10,)}.items()})
SHA = hashlib.sha256(DATA).hexdigest()
CHUNK = 1 << 20
CHUNKS = [DATA[i:i + CHUNK] for i in range(0, len(DATA), CHUNK)]
HEAD = PART_BYTES // CHUNK + 1  # chunks that fill the first part and start the second


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from serving_bucket(tmp_path_factory, BUCKET)


class Cluster:
    def __init__(self, targets: list[str], admin_key: str, s3: S3Server, prefix: str) -> None:
        self.targets, self.prefix = targets, prefix
        with maas.Client(targets[0], api_key=admin_key) as admin:
            self.keys = {t: admin.create_key(t, ["infer", "train"]).api_key for t in "ab"}
        self.bucket = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                                   aws_access_key_id="k", aws_secret_access_key="s")

    @contextlib.contextmanager
    def stub(self, gateway: int, tenant: str = "a"
             ) -> Iterator[tuple[ModelServiceStub, tuple[tuple[str, str]]]]:
        with grpc.insecure_channel(self.targets[gateway]) as channel:
            yield ModelServiceStub(channel), (("authorization", f"Bearer {self.keys[tenant]}"),)

    def leftovers(self) -> list[str]:
        """Objects and multipart uploads under the uploads prefix."""
        prefix = f"{self.prefix}/uploads/"
        objects = self.bucket.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        uploads = self.bucket.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
        return ([o["Key"] for o in objects.get("Contents", [])]
                + [u["Key"] for u in uploads.get("Uploads", [])])


@contextlib.contextmanager
def _cluster(s3: S3Server, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             count: int, ttl_s: float) -> Iterator[Cluster]:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    admin_key = ensure_key_file(tmp_path / "admin.key")
    url = f"s3://{BUCKET}/{tmp_path.name}"
    with contextlib.ExitStack() as stack:
        ports = [stack.enter_context(running_gateway(
            redis_url, tmp_path / f"node-{i}", auth="on", upload_ttl_s=ttl_s,
            artifact_url=url, admin_key_file=str(tmp_path / "admin.key")))
            for i in range(count)]
        yield Cluster([f"127.0.0.1:{p}" for p in ports], admin_key, s3, tmp_path.name)


@pytest.fixture
def cluster(s3: S3Server, redis_url: str, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    with _cluster(s3, redis_url, tmp_path, monkeypatch, 2, 3600.0) as running:
        yield running


def _start(name: str, **over: object) -> mpb.UploadModelStart:
    model = mpb.RegisterModelRequest(name=name, architecture="mlp",
                                     config_json=json.dumps(WIDE))
    fields: dict[str, object] = {"model": model, "size_bytes": len(DATA), "sha256": SHA}
    fields.update(over)
    return mpb.UploadModelStart(**fields)  # type: ignore[arg-type]


def _messages(start: mpb.UploadModelStart, chunks: list[bytes],
              hold: threading.Event | None = None) -> Iterator[mpb.UploadModelRequest]:
    yield mpb.UploadModelRequest(start=start)
    for chunk in chunks:
        yield mpb.UploadModelRequest(chunk=chunk)
    if hold is not None:
        hold.wait(30)


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code(), caught.value.details() or ""


def _create(stub: ModelServiceStub, md: object, name: str, **over: object) -> str:
    request = mpb.CreateModelUploadRequest(start=_start(name, **over))
    return str(stub.CreateModelUpload(request, metadata=md, timeout=10).upload.upload_id)


def _wait_received(stub: ModelServiceStub, md: object, upload_id: str, at_least: int) -> int:
    get = mpb.GetModelUploadRequest(upload_id=upload_id)
    deadline = time.monotonic() + 20
    while (got := stub.GetModelUpload(get, metadata=md, timeout=5).upload.received_bytes
           ) < at_least:
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    return int(got)


def _break_after_a_part(stub: ModelServiceStub, md: object, start: mpb.UploadModelStart
                        ) -> tuple[grpc.Future, threading.Event]:
    """A stream that sent one part and a bit and hangs (cancel it to break it)."""
    hold = threading.Event()
    call = stub.UploadModel.future(_messages(start, CHUNKS[:HEAD], hold), metadata=md,
                                   timeout=60)
    return call, hold


def test_a_stream_broken_on_one_gateway_resumes_on_another(cluster: Cluster,
                                                            tmp_path: Path) -> None:
    with cluster.stub(0) as (a, md), cluster.stub(1) as (b, _), cluster.stub(1, "b") as (
            other, md_b):
        uid = _create(a, md, "moved")
        start = _start("moved", upload_id=uid)
        call, hold = _break_after_a_part(a, md, start)
        assert _wait_received(b, md, uid, PART_BYTES) == PART_BYTES  # B sees A's part
        call.cancel()
        hold.set()
        code, details = _code(lambda: b.UploadModel(_messages(
            _start("moved", upload_id=uid, offset=PART_BYTES + CHUNK), []), metadata=md,
            timeout=10))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert f"continue at offset {PART_BYTES}" in details
        code, _ = _code(lambda: other.UploadModel(_messages(start, CHUNKS), metadata=md_b,
                                                  timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND
        get = mpb.GetModelUploadRequest(upload_id=uid)
        assert _code(lambda: other.GetModelUpload(get, metadata=md_b, timeout=5))[0] \
            == grpc.StatusCode.NOT_FOUND
        resumed = _start("moved", upload_id=uid, offset=PART_BYTES)
        version = _retry_busy(lambda: b.UploadModel(_messages(
            resumed, CHUNKS[PART_BYTES // CHUNK:]), metadata=md, timeout=30).model_version)
        assert (version.weights_sha256, version.weights_bytes) == (SHA, len(DATA))
        assert _code(lambda: a.GetModelUpload(get, metadata=md, timeout=5))[0] \
            == grpc.StatusCode.NOT_FOUND
    with maas.Client(cluster.targets[0], api_key=cluster.keys["a"]) as client:
        client.download_model("moved", tmp_path / "dl")
    got = (tmp_path / "dl" / "model.safetensors").read_bytes()
    assert hashlib.sha256(got).hexdigest() == SHA
    assert cluster.leftovers() == []


def _retry_busy(call: object) -> mpb.ModelVersion:
    """The call, again while the broken stream still holds the upload (UNAVAILABLE)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return call()  # type: ignore[operator,no-any-return]
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
            assert time.monotonic() < deadline
            time.sleep(0.1)


class MovingProxy:
    """A TCP proxy whose first connection goes to `first` and is cut after `cut_after` bytes
    from the client; later ones go to `rest`: a client whose retry lands on another replica."""

    def __init__(self, first: str, rest: str, cut_after: int) -> None:
        self.targets, self.cut_after, self.connections = (first, rest), cut_after, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                host, port = self.targets[min(self.connections, 1)].split(":")
                server = socket.create_connection((host, int(port)))
                limit = self.cut_after if self.connections == 0 else None
                self.connections += 1
                for src, dst, cut in ((client, server, limit), (server, client, None)):
                    threading.Thread(target=_pump, args=(src, dst, cut), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
    moved = 0
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            moved += len(data)
            if limit is not None and moved > limit:
                break
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


def test_the_sdk_resumes_on_another_gateway_when_the_network_drops_the_stream(
        cluster: Cluster) -> None:
    proxy = MovingProxy(cluster.targets[0], cluster.targets[1], cut_after=PART_BYTES + 3 * CHUNK)
    try:
        sent: list[int] = []
        with maas.Client(f"127.0.0.1:{proxy.port}", api_key=cluster.keys["a"]) as client:
            version = client.register_model("sdk-moved", "mlp", DATA, WIDE,
                                            progress=sent.append)
            assert [v.version for v in client.get_model("sdk-moved").versions] == ["1"]
    finally:
        proxy.listener.close()
    assert proxy.connections >= 2 and sum(sent) == len(DATA)
    assert version.weights_sha256 == SHA
    assert cluster.leftovers() == []


def test_a_second_stream_on_one_upload_is_unavailable(cluster: Cluster) -> None:
    with cluster.stub(0) as (a, md), cluster.stub(1) as (b, _):
        uid = _create(a, md, "twice")
        call, hold = _break_after_a_part(a, md, _start("twice", upload_id=uid))
        _wait_received(b, md, uid, PART_BYTES)
        code, details = _code(lambda: b.UploadModel(_messages(
            _start("twice", upload_id=uid, offset=PART_BYTES), []), metadata=md, timeout=10))
        call.cancel()
        hold.set()
    assert code == grpc.StatusCode.UNAVAILABLE and "another stream" in details


def test_a_wrong_file_leaves_no_version_and_nothing_in_the_bucket(cluster: Cluster) -> None:
    with cluster.stub(1) as (b, md):
        uid = _create(b, md, "wrong", sha256="0" * 64)
        start = _start("wrong", sha256="0" * 64, upload_id=uid)
        code, details = _code(lambda: b.UploadModel(_messages(start, CHUNKS), metadata=md,
                                                    timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "start.sha256" in details
        assert _code(lambda: b.GetModel(mpb.GetModelRequest(name="wrong"), metadata=md,
                                        timeout=5))[0] == grpc.StatusCode.NOT_FOUND
    assert cluster.leftovers() == []


def test_an_expired_upload_is_aborted(s3: S3Server, redis_url: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with _cluster(s3, redis_url, tmp_path, monkeypatch, 1, 2.0) as cluster, \
            cluster.stub(0) as (a, md):
        uid = _create(a, md, "late")
        # a gateway that died between opening a multipart upload and writing its record
        cluster.bucket.create_multipart_upload(Bucket=BUCKET,
                                               Key=f"{cluster.prefix}/uploads/{'e' * 32}")
        call, hold = _break_after_a_part(a, md, _start("late", upload_id=uid))
        _wait_received(a, md, uid, PART_BYTES)
        call.cancel()
        hold.set()
        assert cluster.leftovers()
        deadline = time.monotonic() + 15
        while cluster.leftovers():  # the gateway's sweep aborts both
            assert time.monotonic() < deadline
            time.sleep(0.2)
        get = mpb.GetModelUploadRequest(upload_id=uid)
        code, details = _code(lambda: a.GetModelUpload(get, metadata=md, timeout=5))
        assert code == grpc.StatusCode.NOT_FOUND and "MAAS_UPLOAD_TTL_S" in details
