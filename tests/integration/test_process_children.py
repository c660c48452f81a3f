"""runtime.process.dying_with_parent: a child started through it dies with its parent, and
starting one is safe in a process whose gRPC is busy (no Python code between fork and exec)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maas.cli.up import free_port
from runtime.health import serve_health
from runtime.process import dying_with_parent

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_child_dies_with_its_parent() -> None:
    parent = ("import subprocess, time\n"
              "from runtime.process import dying_with_parent\n"
              f"p = subprocess.Popen(dying_with_parent({SLEEPER!r}), "
              "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
              "time.sleep(1.0)\n"
              "print(p.pid, p.poll() is None, flush=True)\n")
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                          timeout=30, check=True)
    pid, running = done.stdout.split()
    assert running == "True", "the child did not start"
    child = int(pid)
    deadline = time.monotonic() + 10
    while is_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_alive(child), "the child outlived its parent"


async def test_children_start_while_grpc_is_busy() -> None:
    """gRPC's fork handlers abort a child that runs Python before exec (preexec_fn)."""
    port = free_port()
    async with serve_health(port, asyncio.Event()), \
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stop = asyncio.Event()

        async def busy() -> None:
            while not stop.is_set():
                await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)

        load = asyncio.create_task(busy())
        codes = []
        for _ in range(20):
            child = await asyncio.create_subprocess_exec(
                *dying_with_parent([sys.executable, "-c", "pass"]))
            codes.append(await child.wait())
        stop.set()
        await load
    assert codes == [0] * 20
