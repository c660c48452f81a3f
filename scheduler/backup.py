"""Backing up the queue's Redis while it runs, and restoring it: its AOF directory.

The procedure Redis documents for AOF persistence (Redis >= 7, multi-part AOF): automatic
rewrites are switched off for the copy (a rewrite replaces the files being copied), the copy
waits until no rewrite is in progress, copies the manifest and the files it names, then
switches rewrites back on. The files are append-only, so each copy is a prefix of what Redis
acknowledged (with `appendfsync always`, everything acknowledged before the copy began); a
command torn at the end of the last file is what `aof-load-truncated yes` (the default)
loads past. The archive is one tar.gz: the AOF directory as it was, and backup.json.

    python -m scheduler.backup create --data-dir /data --to /backups      # or s3://bucket/prefix
    python -m scheduler.backup create ... --every 3600 --keep 48          # a sidecar's loop
    python -m scheduler.backup restore ARCHIVE --data-dir /data           # Redis stopped

The process reads Redis's files, so it runs where they are (the Redis pod's volume:
deploy/k8s/components/redis-backup); it reaches Redis at MAAS_REDIS_URL for CONFIG and INFO.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis

from scheduler.connection import is_cluster_url

log = logging.getLogger(__name__)

ARCHIVE_PREFIX = "maas-redis-"
METADATA = "backup.json"
REWRITE_WAIT_S = 600.0  # the longest a backup waits for a running AOF rewrite to end


class BackupError(RuntimeError):
    """A backup or restore that cannot be made; the message says what to do."""


@dataclass(frozen=True)
class Backup:
    location: str  # the archive's path or s3:// URL
    files: tuple[str, ...]  # the AOF files it holds, as the manifest names them
    size_bytes: int


def create_backup(client: redis.Redis, data_dir: Path, destination: str,
                  rewrite_wait_s: float = REWRITE_WAIT_S) -> Backup:
    """Copies the AOF directory of the Redis behind `client` (its files under `data_dir`, the
    server's `dir` as this process sees it) into an archive at `destination`."""
    if _config(client, "appendonly") != "yes":
        raise BackupError("Redis runs without the AOF (appendonly no): there is nothing durable "
                          "to back up; maas needs appendonly yes (deploy/k8s/base/redis.conf)")
    aof_dir = data_dir / _config(client, "appenddirname")
    manifest = f"{_config(client, 'appendfilename')}.manifest"
    percentage = _config(client, "auto-aof-rewrite-percentage")
    client.config_set("auto-aof-rewrite-percentage", "0")
    name = f"{ARCHIVE_PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.tar.gz"
    local = not destination.startswith("s3://")
    if local:
        Path(destination).mkdir(parents=True, exist_ok=True)
    # Streamed to a file (next to the final one when local): never the whole AOF in memory.
    with tempfile.NamedTemporaryFile(dir=destination if local else None,
                                     suffix=".part") as part:
        try:
            _wait_no_rewrite(client, rewrite_wait_s)
            files = _archive(aof_dir, manifest, _server_version(client), part)
        finally:
            client.config_set("auto-aof-rewrite-percentage", percentage)
        part.flush()
        os.fsync(part.fileno())
        size = part.tell()
        return Backup(_store(Path(part.name), destination, name), files, size)


def restore_backup(source: str, data_dir: Path) -> Path:
    """Unpacks an archive into `data_dir` (Redis stopped); refuses a directory that already
    holds an AOF. Returns the AOF directory; start Redis with the same appenddirname."""
    with _fetched(source) as archive, tarfile.open(fileobj=archive, mode="r:gz") as tar:
        meta = _metadata(tar)
        directory = str(meta["aof_dir"])
        target = data_dir / directory
        if target.exists() and any(target.iterdir()):
            raise BackupError(f"{target} already holds an AOF: restore into an empty data "
                              "directory (move the old one aside first)")
        members = [m for m in tar.getmembers() if m.name != METADATA]
        for member in members:
            if not member.isfile() or Path(member.name).parent != Path(directory):
                raise BackupError(f"{source} is not a maas backup: unexpected member "
                                  f"{member.name!r}")
        data_dir.mkdir(parents=True, exist_ok=True)
        tar.extractall(data_dir, members=members, filter="data")
    return target


def prune(directory: Path, keep: int) -> list[Path]:
    """Removes all but the newest `keep` archives of a local backup directory."""
    archives = sorted(directory.glob(f"{ARCHIVE_PREFIX}*.tar.gz"))
    doomed = archives[:-keep] if keep > 0 else []
    for path in doomed:
        path.unlink()
    return doomed


def _config(client: redis.Redis, name: str) -> str:
    value = client.config_get(name).get(name)
    if value is None:
        raise BackupError(f"Redis does not report {name!r} (CONFIG GET): Redis >= 7 is needed")
    return str(value)


def _server_version(client: redis.Redis) -> str:
    return str(client.info("server").get("redis_version", ""))


def _wait_no_rewrite(client: redis.Redis, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        info = client.info("persistence")
        if not int(info.get("aof_rewrite_in_progress", 0)) \
                and not int(info.get("aof_rewrite_scheduled", 0)):
            return
        if time.monotonic() > deadline:
            raise BackupError(f"an AOF rewrite was still running after {wait_s:g} s; try again")
        time.sleep(0.1)


def _archive(aof_dir: Path, manifest: str, version: str, out: IO[bytes]) -> tuple[str, ...]:
    manifest_path = aof_dir / manifest
    try:
        manifest_text = manifest_path.read_text()
    except FileNotFoundError:
        raise BackupError(f"no AOF manifest at {manifest_path}: is --data-dir the directory "
                          "Redis writes (its `dir`)?") from None
    files = tuple(_manifest_files(manifest_text))
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        meta = {"aof_dir": aof_dir.name, "manifest": manifest, "files": list(files),
                "redis_version": version, "created_unix_s": int(time.time())}
        _add_bytes(tar, METADATA, json.dumps(meta, indent=2).encode())
        # The manifest as read above (the files it names cannot change: rewrites are off).
        _add_bytes(tar, f"{aof_dir.name}/{manifest}", manifest_text.encode())
        for name in files:
            tar.add(aof_dir / name, arcname=f"{aof_dir.name}/{name}")
    return files


def _manifest_files(text: str) -> list[str]:
    """The file names of a multi-part AOF manifest (`file NAME seq N type b|h|i` lines)."""
    names = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "file":
            name = fields[1]
            if "/" in name or name in (".", ".."):
                raise BackupError(f"unexpected file name in the AOF manifest: {name!r}")
            names.append(name)
    if not names:
        raise BackupError("the AOF manifest names no file")
    return names


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _metadata(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.extractfile(METADATA)
    except KeyError:
        member = None
    if member is None:
        raise BackupError(f"not a maas backup: {METADATA} is missing")
    meta = json.loads(member.read())
    name = str(meta.get("aof_dir", ""))
    if not name or "/" in name or name in (".", ".."):
        raise BackupError(f"not a maas backup: bad aof_dir {name!r}")
    return dict(meta)


def _store(part: Path, destination: str, name: str) -> str:
    if destination.startswith("s3://"):
        from runtime.artifact_s3 import parse_s3_url, s3_client

        bucket, prefix = parse_s3_url(destination)
        key = f"{prefix.rstrip('/')}/{name}" if prefix else name
        s3_client().upload_file(str(part), bucket, key)
        return f"s3://{bucket}/{key}"
    final = Path(destination) / name
    os.link(part, final)  # the complete archive appears under its name at once
    return str(final)


@contextlib.contextmanager
def _fetched(source: str) -> Iterator[IO[bytes]]:
    if source.startswith("s3://"):
        from runtime.artifact_s3 import parse_s3_url, s3_client

        bucket, key = parse_s3_url(source)
        with tempfile.TemporaryFile() as copy:
            s3_client().download_fileobj(bucket, key, copy)
            copy.seek(0)
            yield copy
        return
    try:
        with open(source, "rb") as f:
            yield f
    except FileNotFoundError:
        raise BackupError(f"no backup at {source}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler.backup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="archive the AOF directory of a running Redis")
    create.add_argument("--data-dir", type=Path, required=True,
                        help="Redis's `dir` as this process sees it (e.g. /data)")
    create.add_argument("--to", required=True, help="a directory or s3://bucket/prefix")
    create.add_argument("--redis-url", default=os.environ.get("MAAS_REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    create.add_argument("--every", type=float, default=0.0,
                        help="repeat every N seconds (a sidecar); 0: once")
    create.add_argument("--keep", type=int, default=0,
                        help="keep the newest N archives of a directory --to (0: all)")
    restore = commands.add_parser("restore", help="unpack an archive into an empty data dir")
    restore.add_argument("archive", help="a path or s3://bucket/key")
    restore.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "restore":
        try:
            print(f"restored into {restore_backup(args.archive, args.data_dir)}")
        except (BackupError, OSError) as exc:
            print(f"backup: {exc}", file=sys.stderr)
            return 1
        return 0
    if is_cluster_url(args.redis_url):
        print("backup: the URL names a Redis Cluster; run one backup per primary, each "
              "with a redis:// URL of that node and its own data dir (deploy/k8s/README.md, "
              "\"Redis Cluster\")", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(args.redis_url)  # the URL carries the password
    while True:
        try:
            made = create_backup(client, args.data_dir, args.to)
            log.info("backup %s: %d files, %d bytes", made.location, len(made.files),
                     made.size_bytes)
            if args.keep and not args.to.startswith("s3://"):
                prune(Path(args.to), args.keep)
        except (BackupError, redis.RedisError, OSError) as exc:
            if args.every <= 0:
                print(f"backup: {exc}", file=sys.stderr)
                return 1
            log.error("backup failed (next try in %g s): %s", args.every, exc)
        if args.every <= 0:
            return 0
        time.sleep(args.every)

if __name__ == "__main__":
    sys.exit(main())
