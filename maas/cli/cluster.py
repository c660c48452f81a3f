"""The supervisor of `maas up`'s processes: each service a child process whose output is
printed line by line behind its name, restarted with exponential backoff when it dies, and
stopped with SIGTERM, a grace, then SIGKILL (redis last)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.process import dying_with_parent

MAX_BACKOFF_S = 30.0


@dataclass
class Service:
    name: str
    argv: list[str]
    # Variables of this service only, over the cluster's (e.g. its own MAAS_METRICS_PORT).
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    printer: threading.Thread | None = None


class LocalCluster:
    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.env = env
        self.data_dir = data_dir
        self.services: list[Service] = []
        self.stopping = False

    def start(self, service: Service) -> None:
        service.proc = subprocess.Popen(  # SIGTERM'd when `maas up` itself dies
            dying_with_parent(service.argv), env={**self.env, **service.env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        service.started_at = time.monotonic()
        service.printer = threading.Thread(target=_prefix, args=(service.name, service.proc),
                                           daemon=True)
        service.printer.start()

    def add(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Service:
        service = Service(name, argv, dict(env or {}))
        self.services.append(service)
        self.start(service)
        return service

    def supervise_once(self) -> None:
        """Restarts dead services with exponential backoff (reset after a minute of life)."""
        now = time.monotonic()
        for s in self.services:
            if s.proc is None or s.proc.poll() is None:
                continue
            if s.restart_at == 0.0:
                lived_s = now - s.started_at
                s.restarts = 0 if lived_s > 60 else s.restarts + 1
                delay = min(MAX_BACKOFF_S, 0.5 * 2 ** s.restarts)
                print(f"[maas] {s.name} exited with {s.proc.returncode}; "
                      f"restarting in {delay:.1f}s", flush=True)
                s.restart_at = now + delay
            elif now >= s.restart_at:
                s.restart_at = 0.0
                self.start(s)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM every service (Redis last: "redis", or a local cluster's "redis-N"), wait
        for the grace, then SIGKILL."""
        self.stopping = True
        for group in ([s for s in self.services if not _is_redis(s.name)],
                      [s for s in self.services if _is_redis(s.name)]):
            for s in group:
                if s.proc and s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for s in group:
                if s.proc is None:
                    continue
                try:
                    s.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait()
                if s.printer is not None:
                    s.printer.join(5)


def _is_redis(name: str) -> bool:
    return name == "redis" or name.startswith("redis-")


def _prefix(name: str, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            sys.stdout.write(f"[{name}] {line.decode(errors='replace')}")
            sys.stdout.flush()
