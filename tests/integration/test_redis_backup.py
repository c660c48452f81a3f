"""scheduler.backup against real redis-servers: a backup taken while jobs flow and an AOF
rewrite runs, the server then lost (SIGKILL), the archive restored into a fresh server: every
job acknowledged before the backup is there as it was, and of the jobs acknowledged during
it, a prefix in submit order."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import redis

from runtime.queue.v1.queue_pb2 import InferTask, JobEnvelope, JobKind, JobResult, JobState
from scheduler import keys
from scheduler.backup import BackupError, create_backup, main, restore_backup
from scheduler.connection import connect
from scheduler.queue import JobQueue, new_job_id
from tests.conftest import RedisServer, start_redis_server

MODEL = "m1"


def envelope(key: str = "") -> JobEnvelope:
    return JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER, model=MODEL,
                       model_version="1", idempotency_key=key, max_attempts=3,
                       infer=InferTask(request_id="r"))


def job_hashes(client: redis.Redis, job_ids: list[str]) -> dict[str, dict[Any, Any]]:
    return {job_id: client.hgetall(keys.job(MODEL, job_id)) for job_id in job_ids}


def stream_jobs(client: redis.Redis) -> list[str]:
    """Job ids in the model's streams, in stream order per priority."""
    entries: list[Any] = [e for level in keys.LEVELS
                          for e in client.xrange(keys.stream(MODEL, level)) or []]
    return [fields[b"job"].decode() for _, fields in entries]


def pending(client: redis.Redis) -> int:
    """Entries leased and not acknowledged, over the model's streams."""
    return sum(client.xpending(keys.stream(MODEL, level), keys.GROUP)["pending"]
               for level in keys.LEVELS if client.exists(keys.stream(MODEL, level)))


@pytest.fixture
def live(tmp_path: Path) -> Any:
    server = start_redis_server(tmp_path / "live", appendonly=True)
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait(10)


def stopped(server: RedisServer) -> None:
    server.proc.terminate()
    server.proc.wait(10)


async def test_a_backup_under_load_restores_every_acknowledged_job(live: RedisServer,
                                                                     tmp_path: Path) -> None:
    client = connect(live.url)
    queue = JobQueue(client, result_ttl_ms=600_000)
    await queue.ensure_group(MODEL)
    before = [(await queue.submit(envelope(key=f"k{i}" if i % 3 == 0 else "")))[1]
              for i in range(300)]
    # Jobs in every state: 40 started (pending, leased), 20 of them completed.
    started = (await queue.claim("w1", MODEL, 40)).runnable
    await queue.complete("w1", [(s.delivery, JobResult(job_id=s.delivery.job_id,
                                                       state=JobState.JOB_STATE_SUCCEEDED))
                                for s in started[:20]])
    sync = live.client()
    expected = job_hashes(sync, before)
    expected_stream = stream_jobs(sync)
    assert pending(sync) == 20

    during: list[str] = []
    done = asyncio.Event()

    async def keep_submitting() -> None:
        while not done.is_set():
            during.append((await queue.submit(envelope()))[1])

    await client.bgrewriteaof()  # a rewrite in progress: the backup waits for it to end
    writer = asyncio.create_task(keep_submitting())
    try:
        made = await asyncio.to_thread(create_backup, sync, live.dir, str(tmp_path / "backups"))
    finally:
        done.set()
        await writer
        await client.aclose()
    assert sync.config_get("auto-aof-rewrite-percentage") == {
        "auto-aof-rewrite-percentage": "100"}  # switched back on
    assert made.location.endswith(".tar.gz") and made.size_bytes > 0
    assert during  # jobs were acknowledged while the copy ran
    assert any(".base." in name for name in made.files)
    live.proc.kill()  # the node is gone
    live.proc.wait(10)

    aof_dir = restore_backup(made.location, tmp_path / "restored")
    assert aof_dir == tmp_path / "restored" / "appendonlydir"
    fresh = start_redis_server(tmp_path / "restored", appendonly=True)
    try:
        restored = fresh.client()
        assert job_hashes(restored, before) == expected
        in_stream = stream_jobs(restored)
        assert in_stream[:len(expected_stream)] == expected_stream
        assert pending(restored) == 20
        # Jobs acknowledged while the copy ran: a prefix of them, in order (the AOF is
        # append-only and fsynced per write), each with its job hash.
        kept = [job_id for job_id in during if restored.exists(keys.job(MODEL, job_id))]
        print(f"acknowledged during the backup: {len(during)}, in the archive: {len(kept)}")
        assert kept == during[:len(kept)]
        assert in_stream[len(expected_stream):] == kept
    finally:
        stopped(fresh)


def test_restore_refuses_a_directory_that_holds_an_aof(live: RedisServer,
                                                       tmp_path: Path) -> None:
    live.client().set("x", "1")
    made = create_backup(live.client(), live.dir, str(tmp_path / "backups"))
    with pytest.raises(BackupError, match="already holds an AOF"):
        restore_backup(made.location, live.dir)


def test_restore_refuses_an_archive_that_is_not_a_backup(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        for name, data in (("backup.json", json.dumps({"aof_dir": "appendonlydir"}).encode()),
                           ("appendonlydir/../../escape", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BackupError, match="unexpected member"):
        restore_backup(str(evil), tmp_path / "target")
    assert not (tmp_path / "escape").exists()
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz"):
        pass
    with pytest.raises(BackupError, match=r"backup\.json is missing"):
        restore_backup(str(plain), tmp_path / "target")
    with pytest.raises(BackupError, match="no backup at"):
        restore_backup(str(tmp_path / "none.tar.gz"), tmp_path / "target")


def test_a_server_without_the_aof_is_refused(tmp_path: Path) -> None:
    server = start_redis_server(tmp_path / "plain", appendonly=False)
    try:
        with pytest.raises(BackupError, match="appendonly no"):
            create_backup(server.client(), server.dir, str(tmp_path / "backups"))
    finally:
        stopped(server)


def test_the_command_keeps_the_newest_archives(live: RedisServer, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    backups = tmp_path / "backups"
    (backups).mkdir()
    old = backups / "maas-redis-20000101T000000Z.tar.gz"
    old.write_bytes(b"an older archive")
    args = ["create", "--data-dir", str(live.dir), "--to", str(backups), "--redis-url", live.url,
            "--keep", "1"]
    assert main(args) == 0
    left = sorted(backups.iterdir())
    assert len(left) == 1 and left[0] != old and left[0].name.endswith(".tar.gz")
    assert main(["restore", str(old), "--data-dir", str(tmp_path / "r")]) == 1
    assert "no backup at" in capsys.readouterr().err
