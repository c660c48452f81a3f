"""`maas up`: a local cluster — its own redis-server, the scheduler, N gateways on one port
(SO_REUSEPORT: the kernel spreads connections over them) and M workers, each a separate
process with prefixed logs, restarted with backoff when it dies.

This module is the command: its flags, each service's environment and ports, and the start
order. The parts live beside it: the supervisor (maas/cli/cluster.py), the redis-server
(maas/cli/local_redis.py), the readiness waits (maas/cli/readiness.py), the demo models
(maas/cli/demo.py) and the ports (maas/cli/ports.py); their names used by tests and benches
are re-exported here.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from maas.api_keys import ensure_key_file
from maas.cli.cluster import LocalCluster as LocalCluster  # re-exported for callers
from maas.cli.cluster import Service as Service
from maas.cli.console import DEFAULT_PORT as CONSOLE_PORT
from maas.cli.demo import register_demo_models as register_demo_models
from maas.cli.demo import start_demo
from maas.cli.local_redis import REDIS_PASSWORD_FILE as REDIS_PASSWORD_FILE
from maas.cli.local_redis import masked_url as masked_url
from maas.cli.local_redis import start_redis as start_redis
from maas.cli.local_redis_cluster import start_redis_cluster
from maas.cli.ports import free_port as free_port
from maas.cli.ports import own_ports, port_env
from maas.cli.readiness import wait_listening as wait_listening
from maas.cli.readiness import wait_models_ready as wait_models_ready
from maas.cli.readiness import wait_ready as wait_ready


def service_env(args: argparse.Namespace, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    # Each service gets its own (start_services); inherited, they would collide.
    for variable in ("MAAS_METRICS_PORT", "MAAS_HEALTH_PORT"):
        env.pop(variable, None)
    env.update(MAAS_REDIS_URL=redis_url, MAAS_DATA_DIR=str(args.data_dir),
               MAAS_GATEWAY_PORT=str(args.port), MAAS_GATEWAY_HOST=args.host,
               PYTHONUNBUFFERED="1")
    return env


def base_port(flag: int | None, variable: str) -> int:
    """A flag's base port, else the environment's (`maas up` reads it once at start)."""
    raw = os.environ.get(variable, "") if flag is None else str(flag)
    try:
        port = int(raw or 0)
    except ValueError:
        raise SystemExit(f"maas up: {variable}={raw!r} is not a port") from None
    if not 0 <= port <= 65535:
        raise SystemExit(f"maas up: {variable}={port} is not a port (0-65535)")
    return port


def start_services(cluster: LocalCluster, args: argparse.Namespace) -> list[Service]:
    """The scheduler, the gateways and the workers, each with its own metrics and health
    port counted up from the base ports (in this order); returns the gateways."""
    gateway_names = (["gateway"] if args.gateways == 1 else
                     [f"gateway-{i + 1}" for i in range(args.gateways)])
    worker_names = [f"worker-{i + 1}" for i in range(args.workers)]
    metrics = own_ports(["scheduler", *gateway_names, *worker_names],
                        base_port(args.metrics_port, "MAAS_METRICS_PORT"))
    health = own_ports(["scheduler", *worker_names],
                       base_port(args.health_port, "MAAS_HEALTH_PORT"))
    if max([*metrics.values(), *health.values(), 0]) > 65535:
        raise SystemExit("maas up: the metrics or health ports run past 65535; "
                         "choose a lower base")
    for kind, ports in (("/metrics", metrics), ("health", health)):
        if ports:
            print(f"[maas] {kind} ports: " + ", ".join(f"{n} {p}" for n, p in ports.items()),
                  flush=True)
    py = sys.executable
    cluster.add("scheduler", [py, "-m", "scheduler"], port_env(metrics, health, "scheduler"))
    gateways = [cluster.add(name, [py, "-m", "gateway"], port_env(metrics, health, name))
                for name in gateway_names]
    for name in worker_names:
        cluster.add(name, [py, "-m", "worker", "--id", name], port_env(metrics, health, name))
    return gateways


def start_console(cluster: LocalCluster, args: argparse.Namespace) -> str | None:
    """The web console (console/) as one more supervised process, a client of the gateway;
    its URL, or None with --no-console. Port: --console-port, else MAAS_CONSOLE_PORT, else
    8265 (a free one when 8265 is taken); 0 picks a free one."""
    if args.no_console:
        return None
    chosen = args.console_port is not None or bool(os.environ.get("MAAS_CONSOLE_PORT"))
    # 8265 unless told (Ray's dashboard's too: a free port is taken when it is in use).
    port = base_port(args.console_port, "MAAS_CONSOLE_PORT") if chosen else CONSOLE_PORT
    if port == 0 or (not chosen and not is_port_free(args.host, port)):
        port = free_port()
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    cluster.add("console", [sys.executable, "-m", "console", "--target", f"{local}:{args.port}",
                            "--host", args.host, "--port", str(port)])
    return f"http://{local}:{port}/"


def is_port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_counts(args: argparse.Namespace) -> None:
    if args.redis_cluster and args.redis_url:
        raise SystemExit("maas up: --redis-cluster starts a Redis; --redis-url names one: "
                         "give one of them")
    if args.gateways < 1 or args.workers < 1:
        raise SystemExit("maas up: --gateways and --workers must be at least 1")
    if args.gateways > 1 and args.port == 0:
        raise SystemExit("maas up: --gateways above 1 needs a fixed --port (they share it)")


def cmd_up(args: argparse.Namespace) -> int:
    check_counts(args)
    args.data_dir = Path(args.data_dir).resolve()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(dict(os.environ), args.data_dir)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.redis_url:
            redis_url = args.redis_url
        elif args.redis_cluster:
            redis_url = start_redis_cluster(cluster)
        else:
            redis_url = start_redis(cluster)
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
        gateways = start_services(cluster, args)
        console_url = start_console(cluster, args)
        target = f"{args.host}:{args.port}"
        wait_ready(target, cluster)
        wait_listening(gateways, args.port, cluster)
        register_demo_models(target, key)
        wait_models_ready(target, ["mlp", "cnn"], cluster, key)
        several = f" ({len(gateways)} processes)" if len(gateways) > 1 else ""
        print(f"maas ready: gateway {target}{several}", flush=True)
        if console_url:
            print(f"maas console: {console_url}", flush=True)
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
    up = sub.add_parser("up", help="start a local cluster (redis, scheduler, gateways, workers)")
    up.add_argument("--port", type=int, default=50051, help="gateway port")
    up.add_argument("--host", default="127.0.0.1", help="gateway listen address")
    up.add_argument("--gateways", type=int, default=1,
                    help="gateway processes, all on --port (SO_REUSEPORT); each has its own "
                         "reply stream")
    up.add_argument("--workers", type=int, default=1, help="number of worker processes")
    up.add_argument("--metrics-port", type=int, default=None, metavar="BASE",
                    help="/metrics of the scheduler, each gateway, each worker on BASE, "
                         "BASE+1, ... in that order (default: $MAAS_METRICS_PORT; 0 = off)")
    up.add_argument("--health-port", type=int, default=None, metavar="BASE",
                    help="grpc.health.v1 of the scheduler, each worker on BASE, BASE+1, ... "
                         "(default: $MAAS_HEALTH_PORT; 0 = off)")
    up.add_argument("--redis-url", default=None,
                    help="use this Redis instead of starting a redis-server: redis://... or "
                         "a Redis Cluster, redis+cluster://host:port[,host:port...]")
    up.add_argument("--redis-cluster", action="store_true",
                    help="start a local Redis Cluster (3 primaries + 3 replicas) instead of "
                         "one redis-server")
    up.add_argument("--data-dir", default="maas-data", help="artifacts and Redis AOF live here")
    up.add_argument("--auth", action="store_true",
                    help="require API keys (MAAS_AUTH=on); the admin key goes to "
                         "<data-dir>/admin.key")
    up.add_argument("--console-port", type=int, default=None,
                    help="the web console's port (default: $MAAS_CONSOLE_PORT, else 8265; "
                         "0 = a free port)")
    up.add_argument("--no-console", action="store_true", help="do not start the web console")
    up.add_argument("--no-demo", action="store_true", help="skip the demo inference")
    up.add_argument("--exit-after-demo", action="store_true",
                    help="stop everything once ready and the demo ran (smoke tests)")
    up.set_defaults(func=cmd_up)
