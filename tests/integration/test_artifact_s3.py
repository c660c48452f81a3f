"""The S3 artifact store against a real S3-compatible server (moto's, tests/s3_server.py):
writes reach the bucket, another node reads them through its own cache (once), a corrupt
copy is fetched again, checkpoints follow a job to another node, failures are UNAVAILABLE."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maas.cli.up import free_port
from maas.errors import Unavailable
from runtime.artifact_s3 import S3ArtifactStore, s3_client
from runtime.artifacts import artifact_store
from runtime.settings import Settings
from tests.s3_server import S3Server, serving_bucket

BUCKET = "maas-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    yield from serving_bucket(tmp_path_factory, BUCKET)


@pytest.fixture
def aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return s3


class Node:
    """A store as one node sees it, counting the objects it downloads."""

    def __init__(self, root: Path, url: str, cache_bytes: int = 0) -> None:
        self.gets: list[str] = []
        client = s3_client()
        client.meta.events.register("provide-client-params.s3.GetObject", self._count)
        self.store = S3ArtifactStore(url, root, cache_bytes, client)

    def _count(self, params: dict[str, Any], **_: Any) -> None:
        self.gets.append(params["Key"])


def _url(tmp_path: Path) -> str:
    return f"s3://{BUCKET}/{tmp_path.name}"  # a prefix of its own per test


def test_writes_reach_the_bucket_and_other_nodes_read_them_once(
        aws_env: S3Server, tmp_path: Path) -> None:
    url = _url(tmp_path)
    gateway, worker = Node(tmp_path / "gw", url), Node(tmp_path / "w", url)
    digest, _ = gateway.store.put_weights(b"weights" * 1000)
    archive = gateway.store.put_archive(b"archive")
    upload = gateway.store.upload_path("u1")
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"adopted")
    adopted = hashlib.sha256(b"adopted").hexdigest()
    gateway.store.adopt(upload, adopted, is_archive=False)
    assert not upload.exists()
    assert gateway.gets == []  # the writer keeps its own copy
    assert worker.store.read_weights(digest) == b"weights" * 1000
    assert worker.store.read_weights(digest) == b"weights" * 1000
    assert worker.store.read_archive(archive) == b"archive"
    assert worker.store.weights_path(adopted).read_bytes() == b"adopted"
    prefix = f"{tmp_path.name}/"
    assert worker.gets == [f"{prefix}weights/{digest}.safetensors",
                           f"{prefix}archives/{archive}.zip",
                           f"{prefix}weights/{adopted}.safetensors"]
    assert worker.store.weights_path(digest).is_relative_to(tmp_path / "w" / "cache")


def test_a_corrupt_cached_copy_is_downloaded_again(aws_env: S3Server, tmp_path: Path) -> None:
    node = Node(tmp_path / "n", _url(tmp_path))
    digest, path = node.store.put_weights(b"good bytes")
    path.write_bytes(b"bad bytes!")
    assert node.store.read_weights(digest) == b"good bytes"
    assert len(node.gets) == 1


def test_the_cache_keeps_to_its_budget(aws_env: S3Server, tmp_path: Path) -> None:
    url = _url(tmp_path)
    writer, reader = Node(tmp_path / "w", url), Node(tmp_path / "r", url, cache_bytes=2500)
    a, b, c = (writer.store.put_weights(x * 1000)[0] for x in (b"a", b"b", b"c"))
    for digest in (a, b, a, c):  # a is used again after b: b goes first
        reader.store.weights_path(digest)
    cached = {p.stem for p in (tmp_path / "r" / "cache" / "weights").iterdir()}
    assert cached == {a, c}
    reader.store.weights_path(b)
    assert len(reader.gets) == 4


def test_datasets_and_checkpoints_follow_the_job_to_another_node(
        aws_env: S3Server, tmp_path: Path) -> None:
    url = _url(tmp_path)
    first, second = Node(tmp_path / "1", url), Node(tmp_path / "2", url)
    spool = tmp_path / "spool.npz"
    spool.write_bytes(b"dataset")
    digest = hashlib.sha256(b"dataset").hexdigest()
    first.store.put_dataset(spool, digest, "npz")
    assert second.store.dataset_path(digest, "npz").read_bytes() == b"dataset"
    out = first.store.job_dir("job-1")
    (out / "ckpt").mkdir(parents=True)
    (out / "ckpt" / "checkpoint.json").write_text('{"step": 7}')
    first.store.save_job_dir("job-1")
    resumed = second.store.job_dir("job-1")
    assert (resumed / "ckpt" / "checkpoint.json").read_text() == '{"step": 7}'
    assert second.store.job_dir("job-2").exists() is False  # nothing saved: nothing there


def test_a_missing_object_is_file_not_found(aws_env: S3Server, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="has no object"):
        Node(tmp_path, _url(tmp_path)).store.weights_path("0" * 64)


def test_a_missing_bucket_is_unavailable(aws_env: S3Server, tmp_path: Path) -> None:
    store = Node(tmp_path, "s3://no-such-bucket/x").store
    with pytest.raises(Unavailable, match=r"s3://no-such-bucket/x \(MAAS_ARTIFACT_URL\)"):
        store.put_weights(b"w")


def test_an_unreachable_store_is_unavailable(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # no one there
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "x")
    store = artifact_store(Settings(data_dir=tmp_path, artifact_url="s3://bucket/p"))
    with pytest.raises(Unavailable, match=r"s3://bucket/p \(MAAS_ARTIFACT_URL\) is unreachable"):
        store.read_weights("0" * 64)
