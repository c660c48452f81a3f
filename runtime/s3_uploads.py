"""Resumable uploads kept in the object store: the S3 side of gateway/upload_sessions_s3.py.

An upload `<id>` is an S3 multipart upload of the key `<prefix>/uploads/<id>` and a small
record `<prefix>/uploads/<id>.json` (its tenant, its UploadModelStart as protobuf JSON, the
S3 upload id and the part size). Parts have one fixed size (the last may be shorter), so the
bytes received are the sum of the parts S3 lists, whichever node sent them. Completing the
multipart upload assembles the object `uploads/<id>`; discarding aborts it and deletes the
object and the record. Blocking (boto3): callers run these in a thread.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from runtime.artifact_s3 import _TRANSFER, S3ArtifactStore

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import CompletedPartTypeDef

UPLOADS = "uploads/"
MIN_PART_BYTES = 5 << 20  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's maximum parts per multipart upload


@dataclass(frozen=True)
class UploadState:
    """Where an upload stands in the bucket."""

    received_bytes: int  # in its parts; or the assembled object's size
    active_s: float  # when its last part (or its record) was written, Unix s
    is_assembled: bool  # the multipart upload was completed into `uploads/<id>`


def part_size(size_bytes: int, part_bytes: int) -> int:
    """The part size of an upload of `size_bytes`: `part_bytes` (at least S3's minimum),
    larger in whole MiB when S3's 10,000 parts would not hold the file."""
    needed = -(-size_bytes // MAX_PARTS)
    return max(part_bytes, MIN_PART_BYTES, -(-needed // (1 << 20)) << 20)


@contextlib.contextmanager
def _unless_no_upload() -> Iterator[list[bool]]:
    """Swallows S3's NoSuchUpload (a multipart upload completed or aborted); the list it
    yields holds True afterwards when it did."""
    missing: list[bool] = []
    try:
        yield missing
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise
        missing.append(True)


class S3Uploads:
    def __init__(self, store: S3ArtifactStore) -> None:
        self.store = store
        self._s3 = store.client
        self.bucket = store.bucket

    def _object(self, upload_id: str) -> str:
        return self.store.key(f"{UPLOADS}{upload_id}")

    def _record_key(self, upload_id: str) -> str:
        return self.store.key(f"{UPLOADS}{upload_id}.json")

    def create(self, upload_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """Opens the multipart upload and writes its record (with `s3_upload_id`)."""
        key = self._object(upload_id)
        with self.store.translated(key):
            s3_id = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        record = {**record, "s3_upload_id": s3_id}
        try:
            with self.store.translated(self._record_key(upload_id)):
                self._s3.put_object(Bucket=self.bucket, Key=self._record_key(upload_id),
                                    Body=json.dumps(record).encode())
        except BaseException:
            self.discard(upload_id, s3_id)
            raise
        return record

    def record(self, upload_id: str) -> tuple[dict[str, Any], float] | None:
        """The upload's record and when it was written (Unix s); None when there is none."""
        key = self._record_key(upload_id)
        try:
            with self.store.translated(key):
                got = self._s3.get_object(Bucket=self.bucket, Key=key)
                body = got["Body"].read()
        except FileNotFoundError:
            return None
        return json.loads(body), got["LastModified"].timestamp()

    def state(self, upload_id: str, s3_id: str, written_s: float) -> UploadState | None:
        """What the bucket holds of the upload (its record written at `written_s`); None when
        neither its multipart upload nor its assembled object is there."""
        key = self._object(upload_id)
        received, active = 0, written_s
        with self.store.translated(key), _unless_no_upload() as missing:
            pages = self._s3.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=s3_id)
            for page in pages:
                for part in page.get("Parts", []):
                    received += part["Size"]
                    active = max(active, part["LastModified"].timestamp())
        if not missing:
            return UploadState(received, active, is_assembled=False)
        try:
            with self.store.translated(key):
                head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            return None
        return UploadState(head["ContentLength"], head["LastModified"].timestamp(), True)

    def put_part(self, upload_id: str, s3_id: str, number: int, data: bytes) -> None:
        key = self._object(upload_id)
        with self.store.translated(key):
            self._s3.upload_part(Bucket=self.bucket, Key=key, UploadId=s3_id,
                                 PartNumber=number, Body=data)

    def complete(self, upload_id: str, s3_id: str) -> None:
        """Assembles the parts (in order) into the object `uploads/<id>`."""
        key = self._object(upload_id)
        with self.store.translated(key):
            pages = self._s3.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=s3_id)
            parts: list[CompletedPartTypeDef] = [
                {"PartNumber": p["PartNumber"], "ETag": p["ETag"]}
                for page in pages for p in page.get("Parts", [])]
            self._s3.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=s3_id,
                                               MultipartUpload={"Parts": parts})

    def download(self, upload_id: str, path: Path) -> None:
        """The assembled object, written to `path` (streamed, never whole in memory)."""
        key = self._object(upload_id)
        with self.store.translated(key):
            self._s3.download_file(self.bucket, key, str(path), Config=_TRANSFER)

    def adopt(self, upload_id: str, sha256: str, is_archive: bool) -> None:
        """Copies the assembled, checked object to its content-addressed key."""
        self.store.adopt_object(f"{UPLOADS}{upload_id}", sha256, is_archive)

    def discard(self, upload_id: str, s3_id: str) -> None:
        """Aborts the multipart upload, deletes the assembled object and the record."""
        key = self._object(upload_id)
        with self.store.translated(key), _unless_no_upload():
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=s3_id)
        for gone in (key, self._record_key(upload_id)):
            with self.store.translated(gone):
                self._s3.delete_object(Bucket=self.bucket, Key=gone)

    def upload_ids(self) -> Iterator[str]:
        """The ids of the uploads with a record."""
        prefix = self.store.key(UPLOADS)
        with self.store.translated(prefix):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for o in page.get("Contents", []):
                    name = o["Key"].removeprefix(prefix)
                    if name.endswith(".json") and "/" not in name:
                        yield name.removesuffix(".json")

    def multipart_uploads(self) -> Iterator[tuple[str, str, float]]:
        """(upload id, S3 upload id, initiated Unix s) of every multipart upload under
        `uploads/`, with a record or not (a gateway that died between the two)."""
        prefix = self.store.key(UPLOADS)
        with self.store.translated(prefix):
            pages = self._s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for u in page.get("Uploads", []):
                    yield (u["Key"].removeprefix(prefix), u["UploadId"],
                           u["Initiated"].timestamp())
