"""The artifact store: content-addressed files (weights, archives, datasets) and training
jobs' checkpoints, written by gateways and trainers, read by workers.

Two backends behind one interface, chosen by `artifact_store(settings)`:

- `ArtifactStore` (MAAS_ARTIFACT_URL unset): a directory shared by every process,
  `<data-dir>/artifacts`; on Kubernetes a ReadWriteMany volume.
- `S3ArtifactStore` (MAAS_ARTIFACT_URL=s3://bucket/prefix, runtime/artifact_s3.py): the bucket
  is the truth; each node keeps a content-addressed cache of what it read
  (runtime/artifact_cache.py).

Either way, a method that returns a Path returns a local file the caller may open or mmap, and
files are written atomically (temp file, fsync, rename) and named by their sha256, so a reader
never sees half.

Garbage collection (scheduler/artifact_gc.py) deletes weights and archives no version
references once they were last *touched* (written, or stored again by a registration that
found them already there) longer ago than a grace period: a registration in flight touches
what it will reference before it writes its version, and holds it in Redis meanwhile (the
collector's marks and the registrations' pending references close the moment between the
store's last check and its delete). Datasets and job directories are never collected.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.settings import Settings


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store MAAS_ARTIFACT_URL names: the local directory when it is empty."""
    if not settings.artifact_url:
        return ArtifactStore(settings.artifact_dir)
    from runtime.artifact_s3 import S3ArtifactStore  # boto3 only where object storage is used

    return S3ArtifactStore(settings.artifact_url, settings.artifact_dir,
                           cache_bytes=settings.artifact_cache_mb * 1024 * 1024)


# What garbage collection may delete: kind (the store's directory) -> file suffix.
COLLECTED_KINDS = {"weights": ".safetensors", "archives": ".zip"}


@dataclass(frozen=True)
class StoredArtifact:
    """A collectable artifact: kind ("weights" or "archives"), sha256, when last touched."""

    kind: str
    sha256: str
    touched_s: float


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def weights_path(self, sha256: str) -> Path:
        return self.root / "weights" / f"{sha256}.safetensors"

    def dataset_path(self, sha256: str, file_format: str) -> Path:
        return self.root / "datasets" / f"{sha256}.{file_format}"

    def archive_path(self, sha256: str) -> Path:
        """A TorchScript or torch.export archive (a zip), by its sha256."""
        return self.root / "archives" / f"{sha256}.zip"

    def put_archive(self, data: bytes) -> str:
        """Stores a model archive (idempotent); returns its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        if not _touch(self.archive_path(digest)):
            write_atomic(self.archive_path(digest), data)
        return digest

    def read_archive(self, sha256: str) -> bytes:
        """The archive with that digest; FileNotFoundError, or ValueError on corruption."""
        data = self.archive_path(sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"model archive {sha256} is corrupt (sha256 mismatch)")
        return data

    def upload_path(self, upload_id: str) -> Path:
        """Where an upload's bytes land until they are checked (then adopted, or deleted)."""
        return self.root / "uploads" / f"{upload_id}.part"

    def adopt(self, upload: Path, sha256: str, is_archive: bool) -> Path:
        """Moves a checked upload into the store under its sha256 (idempotent: an artifact
        already there is kept and the upload removed); the stored path."""
        final = self.archive_path(sha256) if is_archive else self.weights_path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        if _touch(final):
            upload.unlink(missing_ok=True)
        else:
            with upload.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(upload, final)
        return final

    def put_dataset(self, upload: Path, sha256: str, file_format: str) -> Path:
        """Moves a checked dataset upload into the store (idempotent: a dataset already there
        is kept and the upload left to its owner); the stored path."""
        path = self.dataset_path(sha256, file_format)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(upload, path)
        return path

    def job_dir(self, job_id: str) -> Path:
        """Checkpoints and outputs of one training job (resume reads them back)."""
        return self.root / "jobs" / job_id

    def save_job_dir(self, job_id: str) -> None:
        """Makes the job directory's files durable in the store (after each checkpoint);
        here they already are."""

    def put_weights(self, data: bytes) -> tuple[str, Path]:
        """Stores weights (idempotent); returns (sha256, path)."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.weights_path(digest)
        if not _touch(path):
            write_atomic(path, data)
        return digest, path

    def read_weights(self, sha256: str) -> bytes:
        """The weights with that digest; raises FileNotFoundError or ValueError on corruption."""
        data = self.weights_path(sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"weights file {sha256} is corrupt (sha256 mismatch)")
        return data


    def list_artifacts(self) -> list[StoredArtifact]:
        """Every weights file and archive, with when it was last touched."""
        found = []
        for kind, suffix in COLLECTED_KINDS.items():
            for path in (self.root / kind).glob(f"*{suffix}"):
                with contextlib.suppress(FileNotFoundError):  # collected meanwhile
                    found.append(StoredArtifact(kind, path.name.removesuffix(suffix),
                                                path.stat().st_mtime))
        return found

    def delete(self, kind: str, sha256: str, touched_before_s: float) -> bool:
        """Deletes weights or an archive unless touched since `touched_before_s` (Unix s);
        whether it was deleted."""
        path = self.root / kind / f"{sha256}{COLLECTED_KINDS[kind]}"
        try:
            if path.stat().st_mtime >= touched_before_s:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True


def _touch(path: Path) -> bool:
    """Marks an artifact as just stored (garbage collection spares it for its grace
    period); False when there is none."""
    try:
        now = time.time()
        os.utime(path, (now, now))
    except FileNotFoundError:
        return False
    return True


def write_atomic(path: Path, data: bytes) -> None:
    """Writes a file so that readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
