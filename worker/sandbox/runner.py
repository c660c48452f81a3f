"""The model runner: a child process of a worker that serves one uploaded archive.

`python -m worker.sandbox.runner --scratch DIR ...`, started by `worker.sandbox.pool` with an
environment without secrets, before it knows its model (a warm spare). Its first request
names the archive, whose bytes follow on stdin: it confines itself (`worker.sandbox.confine`)
before it reads a byte of them; then it checks the archive (layout, sha256), loads it,
checks every operator (`worker.sandbox.allowlist`) and
answers: a first RunnerLoaded (violations, confinement), then one reply per forward. A model
that raises answers RunnerError and the runner goes on; one that hangs is killed by the
worker. Its stdout is the protocol alone: anything else printing goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from runtime.archives import TORCH_EXPORT, TORCHSCRIPT, archive_format, check_code
from runtime.queue.v1.runner_pb2 import (
    RunnerError,
    RunnerLoad,
    RunnerLoaded,
    RunnerOutputs,
    RunnerReply,
    RunnerRequest,
)
from worker.sandbox.allowlist import export_violations, torchscript_violations
from worker.sandbox.confine import confine
from worker.sandbox.protocol import frame, from_tensor, read_frame, to_tensor


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.sandbox.runner")
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--memory-mb", type=int, default=4096)
    parser.add_argument("--max-file-mb", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device-path", type=Path, action="append", default=[],
                        help="a device file the runner may use (e.g. /dev/nvidia0)")
    return parser.parse_args(argv)


def _read_archive(stream: BinaryIO, size: int, sha256: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"the archive ended after {len(data)} of {size} bytes")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"the archive does not match its sha256 {sha256}")
    return data


def _load(data: bytes, load: RunnerLoad) -> tuple[Any, list[str]]:
    """(callable module, violations). Violations of the pure-Python code check come first:
    such an archive is never handed to torch."""
    found = archive_format(data)
    if found != load.format:
        raise ValueError(f"the archive is not of its registered format ({found})")
    violations = check_code(data)
    if violations:
        return None, violations
    device = torch.device(load.device or "cpu")
    if load.format == TORCHSCRIPT:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(io.BytesIO(data), map_location=device)  # type: ignore[no-untyped-call]
        return module.eval(), torchscript_violations(module)
    if load.format != TORCH_EXPORT:
        raise ValueError(f"unknown archive format {load.format}")
    program = torch.export.load(io.BytesIO(data))  # weights_only forced by the environment
    violations = export_violations(program)
    if not violations and device.type != "cpu":
        from torch.export.passes import move_to_device_pass
        program = move_to_device_pass(program, device)
    return program.module(), violations


def _forward(module: Any, request: RunnerRequest, device: torch.device) -> RunnerReply:
    inputs = [torch.from_numpy(np.array(from_tensor(t))).to(device)
              for t in request.forward.inputs]
    with torch.inference_mode():
        out = module(*inputs)
    outputs = out if isinstance(out, tuple | list) else (out,)
    return RunnerReply(outputs=RunnerOutputs(outputs=[
        to_tensor(str(i), o.detach().to("cpu").contiguous().numpy())
        for i, o in enumerate(outputs)]))


def _send(out: BinaryIO, reply: RunnerReply) -> None:
    out.write(frame(reply.SerializeToString()))
    out.flush()


def serve(args: argparse.Namespace, requests: BinaryIO, out: BinaryIO) -> int:
    first = read_frame(requests)
    if first is None:
        return 0
    load = RunnerRequest.FromString(first).load
    applied = confine(args.scratch, args.memory_mb << 20, args.max_file_mb << 20,
                      extra_read_write=args.device_path)
    try:
        data = _read_archive(requests, load.archive_bytes, load.archive_sha256)
        module, violations = _load(data, load)
    except Exception as exc:  # the archive's own failure to load is the verdict
        _send(out, RunnerReply(error=RunnerError(message=f"cannot load the archive: {exc}")))
        return 0
    _send(out, RunnerReply(loaded=RunnerLoaded(violations=violations, confinement=applied)))
    if load.verify_only or violations:
        return 0
    device = torch.device(load.device or "cpu")
    while (payload := read_frame(requests)) is not None:
        try:
            reply = _forward(module, RunnerRequest.FromString(payload), device)
        except Exception as exc:  # the model raised: the job fails, the runner goes on
            reply = RunnerReply(error=RunnerError(message=f"{type(exc).__name__}: {exc}"))
        _send(out, reply)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print cannot corrupt the protocol
    torch.set_num_threads(max(args.threads, 1))
    return serve(args, sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
