"""Ports of a local cluster's processes: each its own `/metrics` and health port counted up
from one base, which processes listen on a TCP port (several gateways share one through
SO_REUSEPORT), and a free port for a process to take."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from pathlib import Path

# /proc/net/tcp state of a listening socket.
_LISTEN = "0A"


def own_ports(names: Iterable[str], base: int) -> dict[str, int]:
    """`base`, `base + 1`, ... for `names` in order; {} when `base` is 0 (off)."""
    return {} if base == 0 else {name: base + i for i, name in enumerate(names)}


def port_env(metrics: dict[str, int], health: dict[str, int], name: str) -> dict[str, str]:
    """The MAAS_METRICS_PORT / MAAS_HEALTH_PORT of service `name`: its own, or 0 (off) when
    a base was set but this service has none (a gateway serves health on its gRPC port)."""
    env: dict[str, str] = {}
    for variable, ports in (("MAAS_METRICS_PORT", metrics), ("MAAS_HEALTH_PORT", health)):
        if ports:
            env[variable] = str(ports.get(name, 0))
    return env


def _listening_inodes(port: int) -> set[str] | None:
    """Inodes of the sockets listening on TCP `port` (IPv4 and IPv6); None when this host
    has no /proc/net tables to read."""
    inodes: set[str] | None = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            lines = Path(table).read_text().splitlines()[1:]
            if inodes is None:
                inodes = set()
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def listening_pids(pids: Iterable[int], port: int) -> set[int]:
    """Those of `pids` that hold a socket listening on TCP `port` (Linux /proc); all of
    them where /proc cannot tell."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return set(pids)
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(fd.path)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        found.add(pid)
                        break
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
