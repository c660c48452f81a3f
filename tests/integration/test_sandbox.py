"""Model runners: what an uploaded archive can and cannot do once it runs.

Real runner processes (the worker's own code path). Some tests bypass verification on
purpose (a runner that accepts every operator), to show that the confinement holds by
itself: an archive that slipped past the allowlist still cannot read a file outside its
artifact nor write outside its scratch directory."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from maas.v1.model_service_pb2 import ModelFormat, ModelVersion
from runtime.artifacts import ArtifactStore
from tests.hostile_archives import Allocates, Prints, ReadsFile, Spins, WritesFile, scripted
from tests.model_archives import torchscript
from worker.sandbox import pool as runners
from worker.sandbox.confine import landlock_abi
from worker.sandbox.pool import (
    ArchiveRefused,
    ModelRaised,
    Runner,
    RunnerCrashed,
    RunnerLimits,
    RunnerPool,
    RunnerTimeout,
)

pytestmark = pytest.mark.timeout(90)
LIMITS = RunnerLimits(forward_s=5.0, load_s=60.0, memory_mb=4096, threads=1, device="cpu")
X = np.ones((2, 4), np.float32)
# A runner whose verification accepts everything: the confinement is all that is left.
BYPASS = ("-c", "import sys; import worker.sandbox.runner as r; "
                "r.check_code = lambda data: []; r.torchscript_violations = lambda m: []; "
                "sys.exit(r.main(sys.argv[1:]))")


def _version(store: ArtifactStore, data: bytes, name: str = "m") -> ModelVersion:
    return ModelVersion(model=name, version="1", format=ModelFormat.MODEL_FORMAT_TORCHSCRIPT,
                        archive_sha256=store.put_archive(data), archive_bytes=len(data))


async def _unverified(store: ArtifactStore, data: bytes) -> Runner:
    version = _version(store, data)
    spawned = await runners._spawn(LIMITS, entry=BYPASS)
    runner, loaded = await Runner.start(spawned, store.archive_path(version.archive_sha256),
                                        version, LIMITS)
    assert "seccomp" in loaded.confinement
    if landlock_abi() > 0:
        assert any(c.startswith("landlock abi") for c in loaded.confinement)
    return runner


async def test_an_unverified_archive_cannot_read_files(tmp_path: Path) -> None:
    secret = tmp_path / "admin.key"
    secret.write_text("sk-secret")
    store = ArtifactStore(tmp_path / "artifacts")
    for path in (secret, Path("/etc/passwd"), Path(f"/proc/{os.getpid()}/environ"),
                 store.archive_path(store.put_archive(torchscript(1.0)))):
        runner = await _unverified(store, scripted(ReadsFile(str(path))))
        try:
            with pytest.raises(ModelRaised) as caught:
                await runner.forward([X], LIMITS.forward_s)
            assert "Permission denied" in str(caught.value), path
        finally:
            await runner.close()


async def test_an_unverified_archive_writes_only_in_its_scratch(tmp_path: Path) -> None:
    """torch.save in TorchScript ignores a failed write: what counts is where files land."""
    store = ArtifactStore(tmp_path / "artifacts")
    outside = tmp_path / "planted.pt"
    runner = await _unverified(store, scripted(WritesFile(str(outside))))
    try:
        await runner.forward([X], LIMITS.forward_s)
    finally:
        await runner.close()
    assert not outside.exists()
    inside = await _unverified(store, scripted(WritesFile("inside.pt")))  # cwd = scratch
    try:
        assert (await inside.forward([X], LIMITS.forward_s))[0].tolist() == X.tolist()
        assert (inside._scratch / "inside.pt").stat().st_size > 0
    finally:
        await inside.close()
    assert not inside._scratch.exists()  # removed with its runner


async def test_a_runner_has_a_memory_limit(tmp_path: Path) -> None:
    """8 GiB of address space is refused under MAAS_RUNNER_MEMORY_MB=4096: the model raises,
    its job fails, the runner goes on."""
    store = ArtifactStore(tmp_path / "artifacts")
    pool = RunnerPool(store, LIMITS, max_runners=2)
    hog = _version(store, scripted(Allocates(8)), "hog")
    try:
        with pytest.raises(ModelRaised, match="alloc"):
            await pool.forward(hog, [X])
        with pytest.raises(ModelRaised, match="alloc"):  # the same runner, still serving
            await pool.forward(hog, [X])
    finally:
        await pool.close()


def test_runners_get_no_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAAS_REDIS_URL", "redis://:hunter2@10.0.0.1:6379/0")
    monkeypatch.setenv("MAAS_API_KEY", "sk-secret")
    env = runners._environment(tmp_path, 1)
    assert not [k for k in env if k.startswith("MAAS_")]
    assert "hunter2" not in repr(env) and "sk-secret" not in repr(env)


async def test_verification_refuses_what_is_not_allowed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    pool = RunnerPool(store, LIMITS, max_runners=2)
    try:
        with pytest.raises(ArchiveRefused) as reads:
            await pool.verify(_version(store, scripted(ReadsFile("/etc/passwd"))))
        assert "aten::from_file is not allowed (forward" in reads.value.violations[0]
        with pytest.raises(ArchiveRefused) as prints:  # only the loaded graph shows it
            await pool.verify(_version(store, scripted(Prints())))
        assert prints.value.violations[0].startswith("operator prim::Print is not allowed")
        loaded = await pool.verify(_version(store, torchscript(1.0)))
        assert list(loaded.violations) == []
    finally:
        await pool.close()


async def test_a_spinning_model_is_cut_and_a_dead_runner_replaced(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    limits = RunnerLimits(forward_s=0.5, load_s=60.0, memory_mb=4096, threads=1, device="cpu")
    pool = RunnerPool(store, limits, max_runners=2)
    spin = _version(store, scripted(Spins(10**15)), "spin")
    clean = _version(store, torchscript(2.0), "clean")
    try:
        assert (await pool.forward(clean, [X]))[0].tolist() == (X * 2).tolist()
        began = asyncio.get_running_loop().time()
        with pytest.raises(RunnerTimeout, match="MAAS_MAX_FORWARD_MS"):
            await pool.forward(spin, [X])
        # the cut comes at the limit (plus the runner's start, a warm spare)
        assert asyncio.get_running_loop().time() - began < 5.0
        assert (await pool.forward(clean, [X]))[0].tolist() == (X * 2).tolist()
        call = asyncio.create_task(pool.forward(spin, [X]))
        await asyncio.sleep(0.3)
        for runner in pool._runners.values():  # kill -9 the spinning runner mid-forward
            if runner._process.returncode is None and call is not None:
                runner._process.kill()
        with pytest.raises((RunnerCrashed, RunnerTimeout)):
            await call
        assert (await pool.forward(clean, [X]))[0].tolist() == (X * 2).tolist()
    finally:
        await pool.close()
