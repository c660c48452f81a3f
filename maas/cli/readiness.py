"""Waiting for a local cluster to be ready: a gateway answering grpc.health.v1, every gateway
listening on the shared port, and each model served by a live worker (v2 ModelReady). Each
wait keeps supervising the cluster, so a process that dies meanwhile is restarted."""

from __future__ import annotations

import contextlib
import time

import grpc

from maas.cli.cluster import LocalCluster, Service
from maas.cli.ports import listening_pids

READY_TIMEOUT_S = 90.0


def wait_ready(target: str, cluster: LocalCluster) -> None:
    # grpcio-health-checking is a server part (`maas up` checks it is installed); the CLI's
    # client commands import this module without it.
    from grpc_health.v1 import health_pb2, health_pb2_grpc

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


def wait_listening(services: list[Service], port: int, cluster: LocalCluster) -> None:
    """Waits until each of `services` (gateways sharing `port`) listens on it: one answering
    health is not all of them answering."""
    if len(services) < 2:
        return  # wait_ready saw it answer
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        cluster.supervise_once()
        pids = {s.proc.pid for s in services if s.proc is not None}
        if len(pids) == len(services) and listening_pids(pids, port) == pids:
            return
        time.sleep(0.2)
    raise SystemExit(f"maas up: not every gateway listens on port {port}; see their logs above")


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
