"""The node cache of a remote artifact store: hits, misses, corrupt copies, the LRU budget."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from runtime.artifact_cache import ArtifactCache
from runtime.artifacts import ArtifactStore, artifact_store
from runtime.settings import Settings


class Remote:
    """What a bucket would serve, and how many downloads were asked of it."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.downloads: list[str] = []

    def add(self, name: str, data: bytes) -> str:
        self.objects[name] = data
        return hashlib.sha256(data).hexdigest()

    def get(self, cache: ArtifactCache, name: str, sha256: str) -> Path:
        def download(tmp: Path) -> None:
            self.downloads.append(name)
            tmp.write_bytes(self.objects[name])

        return cache.get(name, sha256, download)


def test_a_miss_downloads_once_then_hits(tmp_path: Path) -> None:
    remote, cache = Remote(), ArtifactCache(tmp_path, budget_bytes=0)
    sha = remote.add("weights/a", b"a" * 100)
    assert remote.get(cache, "weights/a", sha).read_bytes() == b"a" * 100
    assert remote.get(cache, "weights/a", sha) == tmp_path / "weights" / "a"
    assert remote.downloads == ["weights/a"]
    # Another process sharing the directory hashes the copy once and keeps it.
    assert remote.get(ArtifactCache(tmp_path, 0), "weights/a", sha).read_bytes() == b"a" * 100
    assert remote.downloads == ["weights/a"]
    assert [p.name for p in (tmp_path / "weights").iterdir()] == ["a"]  # no temp files left


def test_a_corrupt_copy_is_downloaded_again(tmp_path: Path) -> None:
    remote, cache = Remote(), ArtifactCache(tmp_path, budget_bytes=0)
    sha = remote.add("weights/a", b"a" * 100)
    path = remote.get(cache, "weights/a", sha)
    path.write_bytes(b"b" * 100)  # a flipped disk, a stray writer
    assert remote.get(cache, "weights/a", sha).read_bytes() == b"a" * 100
    assert remote.downloads == ["weights/a", "weights/a"]


def test_an_object_that_does_not_match_its_name_is_refused(tmp_path: Path) -> None:
    remote, cache = Remote(), ArtifactCache(tmp_path, budget_bytes=0)
    remote.add("weights/a", b"a")
    with pytest.raises(ValueError, match="corrupt in the store"):
        remote.get(cache, "weights/a", hashlib.sha256(b"other").hexdigest())
    assert not (tmp_path / "weights" / "a").exists()
    assert list((tmp_path / "weights").iterdir()) == []


def test_the_least_recently_used_go_first_to_fit_the_budget(tmp_path: Path) -> None:
    remote, cache = Remote(), ArtifactCache(tmp_path, budget_bytes=250)
    shas = {n: remote.add(n, n.encode() * 100) for n in "abc"}
    remote.get(cache, "a", shas["a"])
    remote.get(cache, "b", shas["b"])
    remote.get(cache, "a", shas["a"])  # a hit: a is now more recent than b
    remote.get(cache, "c", shas["c"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == ["a", "c"]
    assert remote.downloads == ["a", "b", "c"]


def test_a_file_over_the_budget_stays_alone(tmp_path: Path) -> None:
    remote, cache = Remote(), ArtifactCache(tmp_path, budget_bytes=150)
    small, big = remote.add("small", b"s" * 100), remote.add("big", b"b" * 200)
    remote.get(cache, "small", small)
    assert remote.get(cache, "big", big).exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == ["big"]


def test_add_keeps_bytes_and_moves_files_in(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", budget_bytes=0)
    upload = tmp_path / "upload.part"
    upload.write_bytes(b"u")
    moved = cache.add("weights/u", upload, hashlib.sha256(b"u").hexdigest())
    assert moved.read_bytes() == b"u" and not upload.exists()
    assert cache.add("weights/v", b"v", hashlib.sha256(b"v").hexdigest()).read_bytes() == b"v"


def test_the_local_directory_is_the_default_store(tmp_path: Path) -> None:
    store = artifact_store(Settings(data_dir=tmp_path))
    assert type(store) is ArtifactStore and store.root == tmp_path / "artifacts"


@pytest.mark.parametrize("url", ["http://bucket", "s3://", "s3://Bad_Bucket/x", "bucket/x"])
def test_an_artifact_url_that_is_not_s3_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="MAAS_ARTIFACT_URL"):
        Settings(artifact_url=url)
