"""A node's copy of a remote artifact store's files: content-addressed, LRU within a budget.

Every file is named by what it holds (`weights/<sha256>.safetensors`), so a copy is good as
long as its bytes hash to its name. A hit is hashed once per process (again if the file
changed since); a copy that does not match is deleted and downloaded again. Downloads land in
a temp file beside their final name and are hashed before the rename, so no process opens
half a file or a corrupt one. Recency is the file's access time, set on every hit; after each
addition the least recently used files go until the cache fits `budget_bytes` (0 = no budget).
The file just added stays, even alone over the budget. The processes of a node may share one
cache directory: renames are atomic, and a file deleted while another process has it open or
mapped stays readable to that process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
# A temp file this old belongs to a download that died: eviction removes it.
STALE_TMP_S = 3600.0
_HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactCache:
    """Files under `root` by relative name; `get` downloads on a miss, `add` stores a copy."""

    def __init__(self, root: Path, budget_bytes: int) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        # path -> (inode, size, mtime_ns) of the copy whose hash this process checked.
        self._verified: dict[Path, tuple[int, int, int]] = {}

    def get(self, name: str, sha256: str, download: Callable[[Path], None]) -> Path:
        """The local copy of `name` (whose bytes hash to `sha256`); on a miss or a corrupt
        copy, `download(tmp)` writes the object to `tmp` first. ValueError when what it
        wrote does not hash to `sha256`."""
        path = self.root / name
        if self._is_good(path, sha256):
            _touch(path)
            return path
        with self._temp(path) as tmp:
            download(tmp)
            if (got := sha256_file(tmp)) != sha256:
                raise ValueError(f"artifact {name} is corrupt in the store: its bytes hash to "
                                 f"{got}")
            self._place(tmp, path)
        return path

    def add(self, name: str, source: Path | bytes, sha256: str) -> Path:
        """Stores bytes, or moves in a file, already known to hash to `sha256`."""
        path = self.root / name
        if isinstance(source, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, path)
            _touch(path)
            self._remember(path)
            self._evict(keep=path)
            return path
        with self._temp(path) as tmp:
            tmp.write_bytes(source)
            self._place(tmp, path)
        return path

    def _is_good(self, path: Path, sha256: str) -> bool:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        if self._verified.get(path) == (stat.st_ino, stat.st_size, stat.st_mtime_ns):
            return True
        if sha256_file(path) == sha256:
            self._remember(path)
            return True
        logger.warning("cached artifact %s is corrupt (sha256 mismatch): downloading it again",
                       path)
        path.unlink(missing_ok=True)
        return False

    @contextlib.contextmanager
    def _temp(self, path: Path) -> Iterator[Path]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    def _place(self, tmp: Path, path: Path) -> None:
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _touch(path)
        self._remember(path)
        self._evict(keep=path)

    def _remember(self, path: Path) -> None:
        stat = path.stat()
        self._verified[path] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _evict(self, keep: Path) -> None:
        """Deletes least recently used files until the cache fits its budget."""
        if self.budget_bytes <= 0:
            return
        with _locked(self.root / ".lock"):
            files, now = [], time.time()
            for path in self.root.rglob("*"):
                with contextlib.suppress(FileNotFoundError):
                    stat = path.stat()
                    if not path.is_file() or path.name == ".lock":
                        continue
                    if path.name.startswith(TMP_PREFIX):
                        if now - stat.st_mtime > STALE_TMP_S:
                            path.unlink(missing_ok=True)
                        continue  # a download in progress
                    files.append((stat.st_atime, stat.st_size, path))
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files):
                if total <= self.budget_bytes:
                    break
                if path != keep:
                    path.unlink(missing_ok=True)
                    self._verified.pop(path, None)
                    total -= size
            if total > self.budget_bytes:
                logger.warning("artifact cache %s holds %d bytes, over its budget of %d "
                               "(MAAS_ARTIFACT_CACHE_MB): %s alone is larger", self.root,
                               total, self.budget_bytes, keep.name)


def _touch(path: Path) -> None:
    """Marks a file used now (its access time; the modification time stays)."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock among the processes of a node that share the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
