"""The web console as `maas up` runs it (`python -m console`, a real uvicorn on a free port)
for a test cluster's gateway, and an httpx client of it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from maas.cli.ports import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextmanager
def running_console(target: str, auth: str = "off") -> Iterator[str]:
    """The console's base URL while it runs; stopped (SIGTERM) after."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "console", "--target", target, "--port",
                             str(port), "--auth", auth], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/static/console.css", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the console did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(15)


def csrf_token(client: httpx.Client) -> str:
    """The browser's CSRF token (its cookie), fetched with a first page when missing."""
    if "maas_csrf" not in client.cookies:
        client.get("/login")
    return str(client.cookies["maas_csrf"])
