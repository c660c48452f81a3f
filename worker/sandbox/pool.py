"""The worker's side of model runners: start them, talk to them, kill them.

One runner per archive version, started on first use and kept (least-recently-used beyond
`MAAS_MAX_RUNNERS`). Each forward has a wall-clock limit (`MAAS_MAX_FORWARD_MS`): a runner
that overruns it is killed (RunnerTimeout), one that dies is gone (RunnerCrashed); either way
the next call starts a fresh one. Runners get an environment without secrets: no
`MAAS_*` variable, no Redis URL, no key.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import shutil
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import worker
from maas.v1.model_service_pb2 import ModelVersion
from runtime.artifacts import ArtifactStore
from runtime.queue.v1.runner_pb2 import (
    RunnerForward,
    RunnerLoad,
    RunnerLoaded,
    RunnerReply,
    RunnerRequest,
)
from worker.sandbox.protocol import ProtocolError, frame, from_tensor, read_frame_async, to_tensor

log = logging.getLogger(__name__)
_PASSED_ENV = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")


class RunnerFailure(Exception):
    """A runner that did not answer: `reason` is what its jobs fail with (maas.errors
    ModelTimeout / ModelCrashed on the caller's side)."""

    reason = "MODEL_CRASHED"


class RunnerTimeout(RunnerFailure):
    """The forward ran past its limit; the runner was killed."""

    reason = "MODEL_TIMEOUT"


class RunnerCrashed(RunnerFailure):
    """The runner died (or its pipe broke) during the request."""


class ModelRaised(Exception):
    """The model raised inside the runner (the runner goes on serving)."""


class ArchiveRefused(Exception):
    """The archive did not load or has operators that are not allowed (`violations`)."""

    def __init__(self, message: str, violations: list[str]) -> None:
        super().__init__(message)
        self.violations = violations


@dataclass(frozen=True)
class RunnerLimits:
    forward_s: float
    load_s: float
    memory_mb: int
    threads: int
    device: str


def _environment(scratch: Path, threads: int) -> dict[str, str]:
    """What a runner sees: no secrets, only what Python, torch and CUDA need."""
    env = {k: v for k in _PASSED_ENV if (v := os.environ.get(k)) is not None}
    env.update(PATH="/usr/bin:/bin", HOME=str(scratch), TMPDIR=str(scratch), LANG="C.UTF-8",
               OMP_NUM_THREADS=str(threads), PYTHONDONTWRITEBYTECODE="1",
               PYTHONNOUSERSITE="1", TORCH_FORCE_WEIGHTS_ONLY_LOAD="1",
               PYTHONPATH=str(Path(worker.__file__).resolve().parent.parent))
    return env


def _device_paths(device: str) -> list[str]:
    """The device files a CUDA runner opens (none on CPU)."""
    if not device.startswith("cuda"):
        return []
    return sorted(glob.glob("/dev/nvidia*"))


CHUNK_BYTES = 1 << 20


# Niced before torch is imported: a runner (and a spare) yields the core to its worker.
RUNNER_ENTRY = ("-c", "import os, runpy; os.nice(10); "
                      "runpy.run_module('worker.sandbox.runner', run_name='__main__')")


async def _spawn(limits: RunnerLimits, entry: tuple[str, ...] = RUNNER_ENTRY
                 ) -> tuple[asyncio.subprocess.Process, Path]:
    """A runner process that imports torch and waits for its model."""
    scratch = Path(tempfile.mkdtemp(prefix="maas-runner-"))
    args = ["--scratch", str(scratch), "--memory-mb", str(limits.memory_mb),
            "--threads", str(limits.threads)]
    for path in _device_paths(limits.device):
        args += ["--device-path", path]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *entry, *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, env=_environment(scratch, limits.threads), cwd=scratch,
        start_new_session=True, limit=1 << 20)
    return process, scratch


class Runner:
    """One runner process and its pipes; one request at a time."""

    def __init__(self, process: asyncio.subprocess.Process, scratch: Path) -> None:
        self._process = process
        self._scratch = scratch
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, spawned: tuple[asyncio.subprocess.Process, Path], archive: Path,
                    version: ModelVersion, limits: RunnerLimits, verify_only: bool = False
                    ) -> tuple[Runner, RunnerLoaded]:
        """Hands a spawned runner its archive; the runner once it loaded (and verified) it.
        ArchiveRefused when it did not load or has operators that are not allowed."""
        runner = cls(*spawned)
        load = RunnerLoad(format=version.format, verify_only=verify_only, device=limits.device,
                          archive_bytes=version.archive_bytes,
                          archive_sha256=version.archive_sha256)
        reply = await runner._call(RunnerRequest(load=load), limits.load_s, archive)
        if reply.WhichOneof("kind") == "error":
            await runner.close()
            raise ArchiveRefused(reply.error.message, [reply.error.message])
        if reply.loaded.violations or verify_only:
            await runner.close()
        if reply.loaded.violations:
            raise ArchiveRefused("; ".join(reply.loaded.violations),
                                 list(reply.loaded.violations))
        return runner, reply.loaded

    @property
    def is_alive(self) -> bool:
        return self._process.returncode is None

    async def forward(self, inputs: list[np.ndarray], timeout_s: float) -> list[np.ndarray]:
        request = RunnerRequest(forward=RunnerForward(
            inputs=[to_tensor(str(i), a) for i, a in enumerate(inputs)]))
        reply = await self._call(request, timeout_s)
        if reply.WhichOneof("kind") == "error":
            raise ModelRaised(reply.error.message)
        return [from_tensor(t) for t in reply.outputs.outputs]

    async def _call(self, request: RunnerRequest, timeout_s: float,
                    then: Path | None = None) -> RunnerReply:
        """Sends a request (and the file `then`, raw), and reads the reply within
        `timeout_s`."""
        async with self._lock:
            try:
                payload = await asyncio.wait_for(self._exchange(request, then), timeout_s)
            except TimeoutError:
                await self.close()
                raise RunnerTimeout(f"the model ran longer than {timeout_s * 1000:.0f} ms "
                                   "(MAAS_MAX_FORWARD_MS); its runner was killed") from None
            except (ProtocolError, ConnectionError) as exc:
                code = await self.close()
                raise RunnerCrashed(f"the model's runner died ({_exit(code)})") from exc
            return RunnerReply.FromString(payload)

    async def _exchange(self, request: RunnerRequest, then: Path | None) -> bytes:
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(frame(request.SerializeToString()))
        if then is not None:
            with then.open("rb") as f:  # streamed: the worker never holds a whole archive
                while chunk := await asyncio.to_thread(f.read, CHUNK_BYTES):
                    stdin.write(chunk)
                    await stdin.drain()
        await stdin.drain()
        return await read_frame_async(stdout)

    async def close(self) -> int | None:
        """Kills the runner (if alive) and removes its scratch directory; its exit code."""
        return await _kill(self._process, self._scratch)


async def _kill(process: asyncio.subprocess.Process, scratch: Path) -> int | None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    code = await process.wait()
    shutil.rmtree(scratch, ignore_errors=True)
    return code


def _exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


class RunnerPool:
    """The runners of one worker, by (model, version), and one warm spare: a runner that
    has imported torch and waits for a model, so a model's first request does not wait
    for Python and torch to start."""

    def __init__(self, store: ArtifactStore, limits: RunnerLimits, max_runners: int) -> None:
        self._store = store
        self.limits = limits
        self._max_runners = max_runners
        self._runners: OrderedDict[tuple[str, str], Runner] = OrderedDict()
        self._starting: dict[tuple[str, str], asyncio.Lock] = {}
        self._spare: tuple[asyncio.subprocess.Process, Path] | None = None
        self._spare_lock = asyncio.Lock()

    async def _take_spare(self) -> tuple[asyncio.subprocess.Process, Path]:
        """The warm spare (or a new runner when it is gone); a new spare is started now,
        so that it has imported torch by the time the next model needs it."""
        async with self._spare_lock:
            spare, self._spare = self._spare, None
            if spare is None or spare[0].returncode is not None:
                spare = await _spawn(self.limits)
            self._spare = await _spawn(self.limits)
            return spare

    async def verify(self, version: ModelVersion) -> RunnerLoaded:
        """Loads the archive in a verify-only runner; ArchiveRefused with the reasons."""
        # In a thread: an object store downloads the archive.
        archive = await asyncio.to_thread(self._store.archive_path, version.archive_sha256)
        _, loaded = await Runner.start(await self._take_spare(), archive, version,
                                       self.limits, verify_only=True)
        return loaded

    async def forward(self, version: ModelVersion, inputs: list[np.ndarray]
                      ) -> list[np.ndarray]:
        runner = await self._runner(version)
        try:
            return await runner.forward(inputs, self.limits.forward_s)
        finally:
            if not runner.is_alive:
                self._runners.pop((version.model, version.version), None)

    async def _runner(self, version: ModelVersion) -> Runner:
        key = (version.model, version.version)
        async with self._starting.setdefault(key, asyncio.Lock()):
            runner = self._runners.get(key)
            if runner is not None and runner.is_alive:
                self._runners.move_to_end(key)
                return runner
            while len(self._runners) >= self._max_runners:
                (model, number), evicted = self._runners.popitem(last=False)
                log.info("stopping the runner of %s:%s (MAAS_MAX_RUNNERS)", model, number)
                await evicted.close()
            archive = await asyncio.to_thread(self._store.archive_path,
                                              version.archive_sha256)
            runner, loaded = await Runner.start(await self._take_spare(), archive, version,
                                                self.limits)
            log.info("runner of %s:%s up (%s)", *key, ", ".join(loaded.confinement))
            self._runners[key] = runner
            return runner

    def loaded_names(self) -> list[str]:
        """`model:version` of each live runner (for the worker's heartbeat)."""
        return [f"{m}:{v}" for (m, v), r in self._runners.items() if r.is_alive]

    def has(self, version: ModelVersion) -> bool:
        runner = self._runners.get((version.model, version.version))
        return runner is not None and runner.is_alive

    @property
    def has_room(self) -> bool:
        return len(self._runners) < self._max_runners

    async def preload(self, version: ModelVersion, may_evict: bool = False) -> None:
        """Starts the version's runner ahead of its first request; it takes the place of the
        least recently used runner only if `may_evict`."""
        if not self.has(version) and (self.has_room or may_evict):
            await self._runner(version)

    async def close(self) -> None:
        for runner in self._runners.values():
            await runner.close()
        self._runners.clear()
        if self._spare is not None:
            await _kill(*self._spare)
            self._spare = None
