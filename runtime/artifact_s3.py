"""The artifact store in S3-compatible object storage: MAAS_ARTIFACT_URL=s3://bucket/prefix.

The bucket is the truth. Keys mirror the local store's layout under the prefix
(`weights/<sha256>.safetensors`, `archives/<sha256>.zip`, `datasets/<sha256>.<format>`,
`jobs/<job>/<file>`), so a local store moves to a bucket with `aws s3 sync`. Writes upload
first (multipart for big files) and keep a copy in the node's cache; reads that want a file
get the cache's copy (runtime/artifact_cache.py), so a model is downloaded once per node.

Endpoint, region and credentials come from the standard AWS variables (`AWS_ENDPOINT_URL`,
`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, a web-identity token, a profile...),
as boto3 reads them. A missing object is FileNotFoundError, as in the local store; a store
that cannot be reached or refuses us is `Unavailable`, with a message naming MAAS_ARTIFACT_URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.exceptions import RetriesExceededError as TransferRetriesExceeded

from maas.errors import Unavailable
from runtime.artifact_cache import TMP_PREFIX, ArtifactCache
from runtime.artifacts import COLLECTED_KINDS, ArtifactStore, StoredArtifact

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

# A timeout on every call; botocore's "standard" retries (3 attempts, jittered backoff).
# Checksums only where S3 requires them: other S3-compatible servers reject some of the
# newer default ones.
_CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=60,
                        retries={"max_attempts": 3, "mode": "standard"},
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
_TRANSFER = TransferConfig(multipart_threshold=64 * 1024 * 1024,
                           multipart_chunksize=16 * 1024 * 1024, max_concurrency=8)
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# `touched/<name>` (empty): when a registration last stored `<name>` again (an object's own
# LastModified cannot be moved without copying it); garbage collection reads both.
_TOUCHED = "touched/"


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in "/" or empty) of s3://bucket/prefix."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"MAAS_ARTIFACT_URL={url!r}: must be s3://bucket[/prefix]")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def s3_client() -> S3Client:
    """A client configured from the AWS_* variables; path-style addressing for endpoints
    other than AWS's own (MinIO and most S3-compatible servers need it)."""
    client = boto3.client("s3", config=_CLIENT_CONFIG)
    if "amazonaws.com" in client.meta.endpoint_url:
        return client
    return boto3.client("s3", config=_CLIENT_CONFIG.merge(
        Config(s3={"addressing_style": "path"})))


class S3ArtifactStore(ArtifactStore):
    """`root` is this node's scratch: `cache/` (the budgeted copies), `uploads/` (uploads
    until checked) and `jobs/` (a training job's working directory, saved to the bucket)."""

    def __init__(self, url: str, root: Path, cache_bytes: int,
                 client: S3Client | None = None) -> None:
        super().__init__(root)
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self._client = client or s3_client()
        self.cache = ArtifactCache(root / "cache", cache_bytes)
        # job file -> (size, mtime_ns) as last saved to (or restored from) the bucket.
        self._saved: dict[Path, tuple[int, int]] = {}

    def weights_path(self, sha256: str) -> Path:
        return self._fetch(f"weights/{sha256}.safetensors", sha256)

    def dataset_path(self, sha256: str, file_format: str) -> Path:
        return self._fetch(f"datasets/{sha256}.{file_format}", sha256)

    def archive_path(self, sha256: str) -> Path:
        return self._fetch(f"archives/{sha256}.zip", sha256)

    def put_archive(self, data: bytes) -> str:
        digest = _sha256(data)
        self._put(f"archives/{digest}.zip", data, digest)
        return digest

    def put_weights(self, data: bytes) -> tuple[str, Path]:
        digest = _sha256(data)
        return digest, self._put(f"weights/{digest}.safetensors", data, digest)

    def adopt(self, upload: Path, sha256: str, is_archive: bool) -> Path:
        name = f"archives/{sha256}.zip" if is_archive else f"weights/{sha256}.safetensors"
        return self._put(name, upload, sha256)

    def put_dataset(self, upload: Path, sha256: str, file_format: str) -> Path:
        return self._put(f"datasets/{sha256}.{file_format}", upload, sha256)

    def adopt_object(self, source: str, sha256: str, is_archive: bool) -> None:
        """Copies a checked object of the bucket (`source`, a name under the prefix: a
        resumable upload) to its content-addressed key inside the bucket, no byte through
        this node; touched first, as `_put` does. `adopt` of the same bytes afterwards finds
        it there and only keeps a copy in the cache."""
        name = f"archives/{sha256}.zip" if is_archive else f"weights/{sha256}.safetensors"
        with self._translated(self._key(_TOUCHED + name)):
            self._client.put_object(Bucket=self.bucket, Key=self._key(_TOUCHED + name),
                                    Body=b"")
        if not self._exists(self._key(name)):
            with self._translated(self._key(name)):
                self._client.copy({"Bucket": self.bucket, "Key": self._key(source)},
                                  self.bucket, self._key(name), Config=_TRANSFER)

    @property
    def client(self) -> S3Client:
        """The store's S3 client (runtime/s3_uploads.py drives multipart uploads with it)."""
        return self._client

    def key(self, name: str) -> str:
        """The object key of `name` (a path under the prefix)."""
        return self._key(name)

    def translated(self, key: str) -> contextlib.AbstractContextManager[None]:
        """FileNotFoundError for a missing object; Unavailable for the rest."""
        return self._translated(key)

    def job_dir(self, job_id: str) -> Path:
        """The job's working directory, with what the bucket holds of it (a resumed job
        continues from the last checkpoint saved, whichever node saved it)."""
        local = self.root / "jobs" / job_id
        prefix = self._key(f"jobs/{job_id}/")
        with self._translated(prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        for key in keys:
            path = local / key.removeprefix(prefix)
            if local not in path.parents:
                continue  # a key with ".." in it: not ours
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
            with self._translated(key):
                self._client.download_file(self.bucket, key, str(tmp), Config=_TRANSFER)
            os.replace(tmp, path)
            self._remember(path)
        return local

    def save_job_dir(self, job_id: str) -> None:
        """Uploads the job directory's files that changed since they were last saved."""
        local = self.root / "jobs" / job_id
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            stat = path.stat()
            if path.name.startswith(TMP_PREFIX) or (
                    self._saved.get(path) == (stat.st_size, stat.st_mtime_ns)):
                continue
            key = self._key(f"jobs/{job_id}/{path.relative_to(local).as_posix()}")
            with self._translated(key):
                self._client.upload_file(str(path), self.bucket, key, Config=_TRANSFER)
            self._saved[path] = (stat.st_size, stat.st_mtime_ns)

    def list_artifacts(self) -> list[StoredArtifact]:
        """Every weights object and archive (or touch mark left without one), with when it
        was last touched."""
        touched: dict[str, float] = {}
        for kind in COLLECTED_KINDS:
            for prefix in (f"{kind}/", f"{_TOUCHED}{kind}/"):
                for name, modified in self._listed(prefix):
                    name = name.removeprefix(_TOUCHED)
                    touched[name] = max(touched.get(name, 0.0), modified)
        found = []
        for name, when in touched.items():
            kind, _, file = name.partition("/")
            if file.endswith(COLLECTED_KINDS[kind]) and "/" not in file:
                found.append(StoredArtifact(kind, file.removesuffix(COLLECTED_KINDS[kind]),
                                            when))
        return found

    def delete(self, kind: str, sha256: str, touched_before_s: float) -> bool:
        """Deletes the object and its touch mark unless touched since `touched_before_s`;
        nodes' cached copies stay until their caches evict them."""
        name = f"{kind}/{sha256}{COLLECTED_KINDS[kind]}"
        stamps = [self._modified(self._key(n)) for n in (name, _TOUCHED + name)]
        if not any(stamps) or max(stamps) >= touched_before_s:
            return False
        for key in (self._key(name), self._key(_TOUCHED + name)):
            with self._translated(key):
                self._client.delete_object(Bucket=self.bucket, Key=key)
        return stamps[0] > 0

    def _listed(self, prefix: str) -> Iterator[tuple[str, float]]:
        """(name under our prefix, LastModified as Unix s) of each object under `prefix`."""
        with self._translated(self._key(prefix)):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for o in page.get("Contents", []):
                    yield (o["Key"].removeprefix(self.prefix),
                           o["LastModified"].timestamp())

    def _modified(self, key: str) -> float:
        """LastModified of an object (Unix s); 0 when there is none."""
        try:
            with self._translated(key):
                head = self._client.head_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            return 0.0
        return head["LastModified"].timestamp()

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _fetch(self, name: str, sha256: str) -> Path:
        def download(tmp: Path) -> None:
            with self._translated(self._key(name)):
                self._client.download_file(self.bucket, self._key(name), str(tmp),
                                           Config=_TRANSFER)

        return self.cache.get(name, sha256, download)

    def _put(self, name: str, source: Path | bytes, sha256: str) -> Path:
        """Uploads (unless the bucket has it: content-addressed), then keeps a copy. Touched
        first, so that garbage collection spares an object found already there."""
        key = self._key(name)
        if name.partition("/")[0] in COLLECTED_KINDS:
            with self._translated(self._key(_TOUCHED + name)):
                self._client.put_object(Bucket=self.bucket, Key=self._key(_TOUCHED + name),
                                        Body=b"")
        if not self._exists(key):
            with self._translated(key):
                if isinstance(source, Path):
                    self._client.upload_file(str(source), self.bucket, key, Config=_TRANSFER)
                else:
                    self._client.upload_fileobj(io.BytesIO(source), self.bucket, key,
                                                Config=_TRANSFER)
        return self.cache.add(name, source, sha256)

    def _exists(self, key: str) -> bool:
        try:
            with self._translated(key):
                self._client.head_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            return False
        return True

    def _remember(self, path: Path) -> None:
        stat = path.stat()
        self._saved[path] = (stat.st_size, stat.st_mtime_ns)

    @contextlib.contextmanager
    def _translated(self, key: str) -> Iterator[None]:
        """FileNotFoundError for a missing object; Unavailable for the rest."""
        where = f"artifact store {self.url} (MAAS_ARTIFACT_URL)"
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _NOT_FOUND:
                raise FileNotFoundError(f"{where} has no object {key}") from None
            raise Unavailable(f"{where} refused a request for {key}: {code} "
                              f"{error.get('Message', '')}".rstrip()) from exc
        except S3UploadFailedError as exc:
            raise Unavailable(f"{where} refused an upload of {key}: {exc}") from exc
        except (BotoCoreError, TransferRetriesExceeded) as exc:
            raise Unavailable(f"{where} is unreachable: {exc}") from exc


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
