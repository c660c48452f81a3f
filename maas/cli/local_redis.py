"""The redis-server `maas up` starts: AOF on, bound to 127.0.0.1 on a free port, with a
password made once and kept in the data directory (never on a command line, never printed
unmasked)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import quote

from maas.cli.cluster import LocalCluster
from maas.cli.ports import free_port

# In the data directory: the password of the Redis `maas up` starts (mode 0600).
REDIS_PASSWORD_FILE = "redis.password"


def redis_password(data_dir: Path) -> str:
    """The password of the Redis `maas up` starts: made once, then kept in
    <data-dir>/redis.password (mode 0600) and reused by every later start."""
    path = data_dir / REDIS_PASSWORD_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    password = path.read_text().strip()
    if not password or any(not c.isprintable() or c in ' "\\' for c in password):
        raise SystemExit(f"maas up: {path} must hold one password without spaces, quotes or "
                         "backslashes; delete it to have a new one made")
    return password


def masked_url(url: str) -> str:
    """A Redis URL fit to print: its password (and user) replaced by `****`."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user + colon if colon else ''}****@{host}"


def redis_config(redis_dir: Path, password: str, extra: str = "") -> Path:
    """A config file (mode 0600) with `requirepass` (and `extra` lines): on the command line
    the password would show in every user's `ps`."""
    path = redis_dir / "maas-redis.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'requirepass "{password}"\n{extra}')
    path.chmod(0o600)
    return path


def answers_ping(port: int, password: str) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
        s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
        reply = b""
        while reply.count(b"\r\n") < 2 and (chunk := s.recv(64)):
            reply += chunk
        return reply == b"+OK\r\n+PONG\r\n"
    return False


def start_redis(cluster: LocalCluster, argv_prefix: list[str] | None = None,
                appendfsync: str = "always") -> str:
    """Starts redis-server with AOF (fsync on every write by default: nothing acknowledged
    is lost in a crash; `everysec` trades up to a second of writes for throughput) and a
    password (`redis_password`); returns its URL, which carries the password: never print
    it unmasked (`masked_url`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("maas up: redis-server is not on PATH. Install it "
                         "(Debian/Ubuntu: sudo apt-get install -y redis-server), "
                         "or pass --redis-url of a Redis 7 server.")
    port = free_port()
    redis_dir = cluster.data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    password = redis_password(cluster.data_dir)
    config = redis_config(redis_dir, password)  # a config file comes first on the line
    cluster.add("redis", [*(argv_prefix or []), binary, str(config), "--port", str(port),
                          "--bind", "127.0.0.1", "--dir", str(redis_dir), "--appendonly", "yes",
                          "--appendfsync", appendfsync, "--maxmemory-policy", "noeviction",
                          "--save", "", "--protected-mode", "yes"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if answers_ping(port, password):
            return f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"
        time.sleep(0.1)
    raise SystemExit("maas up: redis-server did not start; see its log above")
