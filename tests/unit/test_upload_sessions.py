"""Resumable upload records on disk (gateway/upload_sessions.py): tenant binding, expiry
and the sweep, and what a failed write means to the caller."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

import grpc
import pytest

from gateway.upload_sessions import UploadSessions, check_resume, storage_error
from maas.errors import FailedPrecondition, NotFound, QuotaExceeded, Unavailable
from maas.v1 import model_service_pb2 as pb
from runtime.cancel import cancel_and_wait

START = pb.UploadModelStart(model=pb.RegisterModelRequest(name="m", architecture="mlp"),
                            size_bytes=10, sha256="a" * 64)


def test_a_full_disk_is_resource_exhausted_naming_the_directory() -> None:
    err = storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), Path("/data/up"))
    assert isinstance(err, QuotaExceeded)
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "/data/up" in err.message and "MAAS_DATA_DIR" in err.message
    assert err.quota_violations[0].subject == "/data/up"
    other = storage_error(OSError(errno.EIO, os.strerror(errno.EIO)), Path("/data/up"))
    assert isinstance(other, Unavailable) and other.code == grpc.StatusCode.UNAVAILABLE


def test_an_upload_is_its_tenants_only(tmp_path: Path) -> None:
    sessions = UploadSessions(tmp_path, ttl_s=60)
    record = sessions.create("a", START)
    assert sessions.get("a", record.upload_id).start == START
    with pytest.raises(NotFound):
        sessions.get("b", record.upload_id)


def test_a_resume_must_match_the_upload(tmp_path: Path) -> None:
    sessions = UploadSessions(tmp_path, ttl_s=60)
    record = sessions.create("a", START)
    record.part.write_bytes(b"12345")
    resumed = pb.UploadModelStart()
    resumed.CopyFrom(START)
    resumed.upload_id, resumed.offset = record.upload_id, 5
    check_resume(record, resumed)
    resumed.offset = 4
    with pytest.raises(FailedPrecondition, match="continue at offset 5") as caught:
        check_resume(record, resumed)
    assert caught.value.violations[0].field == "start.offset"
    resumed.offset, resumed.size_bytes = 5, 11
    with pytest.raises(FailedPrecondition, match=r"start\.size_bytes"):
        check_resume(record, resumed)


def test_expired_uploads_are_swept(tmp_path: Path) -> None:
    sessions = UploadSessions(tmp_path, ttl_s=60)
    old, fresh = sessions.create("a", START), sessions.create("a", START)
    orphan = tmp_path / "0123.part"  # a one-shot upload a crashed gateway left
    orphan.write_bytes(b"x")
    past = time.time() - 120
    for path in (old.part, tmp_path / f"{old.upload_id}.json", orphan):
        os.utime(path, (past, past))
    sessions = UploadSessions(tmp_path, ttl_s=60)  # as a gateway starts
    assert sessions.sweep() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{fresh.upload_id}.part", f"{fresh.upload_id}.json"])
    with pytest.raises(NotFound):
        sessions.get("a", old.upload_id)


async def test_an_idle_gateway_still_sweeps_abandoned_uploads(tmp_path: Path) -> None:
    """No new upload arrives (the only other time a sweep runs): the periodic sweep deletes
    the abandoned one within a sweep period (ttl/10, at most a minute)."""
    sessions = UploadSessions(tmp_path, ttl_s=1.0)
    abandoned = sessions.create("a", START)
    abandoned.part.write_bytes(b"12345")
    sweeper = asyncio.create_task(sessions.sweep_forever())
    try:
        deadline = time.monotonic() + 5
        while left(tmp_path):
            assert time.monotonic() < deadline, "the abandoned upload was never swept"
            await asyncio.sleep(0.05)
    finally:
        await cancel_and_wait(sweeper)


def left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())
