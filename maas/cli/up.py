"""`maas up`: a local cluster — its own redis-server, the scheduler, a gateway and N workers,
each a separate process with prefixed logs, restarted with backoff when it dies."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maas.api_keys import ensure_key_file
from maas.cli.demo import start_demo
from maas.client import Client
from maas.errors import ModelNotFound
from maas.process import dying_with_parent

READY_TIMEOUT_S = 90.0
MAX_BACKOFF_S = 30.0
# In the data directory: the password of the Redis `maas up` starts (mode 0600).
REDIS_PASSWORD_FILE = "redis.password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        """SIGTERM every service (redis last), wait for the grace, then SIGKILL."""
        self.stopping = True
        ordered = sorted(self.services, key=lambda s: s.name == "redis")
        for group in ([s for s in ordered if s.name != "redis"],
                      [s for s in ordered if s.name == "redis"]):
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


def _prefix(name: str, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            sys.stdout.write(f"[{name}] {line.decode(errors='replace')}")
            sys.stdout.flush()


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


def _redis_config(redis_dir: Path, password: str) -> Path:
    """A config file (mode 0600) with `requirepass`: on the command line the password would
    show in every user's `ps`."""
    path = redis_dir / "maas-redis.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'requirepass "{password}"\n')
    path.chmod(0o600)
    return path


def _answers_ping(port: int, password: str) -> bool:
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
    config = _redis_config(redis_dir, password)  # a config file comes first on the line
    cluster.add("redis", [*(argv_prefix or []), binary, str(config), "--port", str(port),
                          "--bind", "127.0.0.1", "--dir", str(redis_dir), "--appendonly", "yes",
                          "--appendfsync", appendfsync, "--maxmemory-policy", "noeviction",
                          "--save", "", "--protected-mode", "yes"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _answers_ping(port, password):
            return f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"
        time.sleep(0.1)
    raise SystemExit("maas up: redis-server did not start; see its log above")


def wait_ready(target: str, cluster: LocalCluster) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            cluster.supervise_once()
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    raise SystemExit(f"maas up: the gateway did not become ready on {target}")


def wait_models_ready(target: str, names: list[str], cluster: LocalCluster,
                      api_key: str | None = None) -> None:
    """Waits until v2 ModelReady says yes for each model (a live worker serves it)."""
    from maas.inference import grpc_service_pb2 as v2
    from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub

    deadline = time.monotonic() + READY_TIMEOUT_S
    metadata = [("authorization", f"Bearer {api_key}")] if api_key else None
    with grpc.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        for name in names:
            while time.monotonic() < deadline:
                cluster.supervise_once()
                with contextlib.suppress(grpc.RpcError):
                    if stub.ModelReady(v2.ModelReadyRequest(name=name), timeout=1.0,
                                       metadata=metadata).ready:
                        break
                time.sleep(0.2)
            else:
                raise SystemExit(f"maas up: model {name} did not become ready (no live worker?)")


def register_demo_models(target: str, api_key: str | None = None) -> None:
    """Demo models `mlp` and `cnn` with seeded random weights, unless already registered;
    in the shared catalog, so every tenant may run them."""
    import torch
    from safetensors.torch import save

    from maas.architectures import get_architecture

    with Client(target, timeout_s=60, api_key=api_key) as client:
        for name in ("mlp", "cnn"):
            try:
                client.get_model(name)
                continue
            except ModelNotFound:
                pass
            arch = get_architecture(name)
            torch.manual_seed(0)
            weights = save(arch.build(arch.resolve_config(None)).state_dict())
            v = client.register_model(name, name, weights, shared=True)
            print(f"[maas] registered demo model {name} v{v.version}", flush=True)


def service_env(args: argparse.Namespace, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MAAS_REDIS_URL=redis_url, MAAS_DATA_DIR=str(args.data_dir),
               MAAS_GATEWAY_PORT=str(args.port), MAAS_GATEWAY_HOST=args.host,
               PYTHONUNBUFFERED="1")
    return env


def cmd_up(args: argparse.Namespace) -> int:
    args.data_dir = Path(args.data_dir).resolve()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(dict(os.environ), args.data_dir)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        redis_url = args.redis_url or start_redis(cluster)
        where = "" if args.redis_url else f" (password in {args.data_dir / REDIS_PASSWORD_FILE})"
        print(f"[maas] redis {masked_url(redis_url)}{where}", flush=True)
        cluster.env = service_env(args, redis_url)
        key = None
        if args.auth:
            key_path = args.data_dir / "admin.key"
            key = ensure_key_file(key_path)
            cluster.env.update(MAAS_AUTH="on", MAAS_ADMIN_KEY_FILE=str(key_path))
            print(f"[maas] auth on: the admin API key is in {key_path} "
                  f"(export MAAS_API_KEY=$(cat {key_path}))", flush=True)
        py = sys.executable
        cluster.add("scheduler", [py, "-m", "scheduler"])
        cluster.add("gateway", [py, "-m", "gateway"])
        for i in range(args.workers):
            cluster.add(f"worker-{i + 1}", [py, "-m", "worker", "--id", f"worker-{i + 1}"])
        target = f"{args.host}:{args.port}"
        wait_ready(target, cluster)
        register_demo_models(target, key)
        wait_models_ready(target, ["mlp", "cnn"], cluster, key)
        print(f"maas ready: gateway {target}", flush=True)
        demo = None if args.no_demo else start_demo(target, key)
        # The demo runs beside the supervisor: a process that dies meanwhile is restarted.
        while not stop.is_set():
            cluster.supervise_once()
            if args.exit_after_demo and (demo is None or not demo.is_alive()):
                break
            stop.wait(0.2)
    finally:
        print("[maas] stopping", flush=True)
        cluster.stop()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = sub.add_parser("up", help="start a local cluster (redis, scheduler, gateway, workers)")
    up.add_argument("--port", type=int, default=50051, help="gateway port")
    up.add_argument("--host", default="127.0.0.1", help="gateway listen address")
    up.add_argument("--workers", type=int, default=1, help="number of worker processes")
    up.add_argument("--redis-url", default=None,
                    help="use this Redis instead of starting a redis-server")
    up.add_argument("--data-dir", default="maas-data", help="artifacts and Redis AOF live here")
    up.add_argument("--auth", action="store_true",
                    help="require API keys (MAAS_AUTH=on); the admin key goes to "
                         "<data-dir>/admin.key")
    up.add_argument("--no-demo", action="store_true", help="skip the demo inference")
    up.add_argument("--exit-after-demo", action="store_true",
                    help="stop everything once ready and the demo ran (smoke tests)")
    up.set_defaults(func=cmd_up)
