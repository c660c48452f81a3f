"""build_server: the gateway's grpc.aio server with its servicers, health and reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.auth_setup import build_auth, server_credentials
from gateway.datasets import DatasetServicer
from gateway.drain import DrainInterceptor, drain
from gateway.errors import ErrorInterceptor
from gateway.explain import Explainer
from gateway.generation import GenerationServicer
from gateway.health import GatewayHealth
from gateway.inference import InferenceServicer
from gateway.jobs import JobServicer
from gateway.keys import KeyServicer
from gateway.models import ModelServicer
from gateway.plane.datasets import Datasets
from gateway.plane.generation import GenerationPlane
from gateway.plane.inference import InferencePlane
from gateway.queue_admin import QueueAdminServicer
from gateway.reflection import enable_reflection, reflection_pool
from gateway.registration import HotMethodsOnly
from gateway.replies import ReplyDispatcher
from gateway.repository import ModelRepository
from gateway.submitter import SubmitCoalescer
from gateway.training import TrainingServicer
from maas.inference import grpc_service_pb2, grpc_service_pb2_grpc
from maas.v1 import (
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    errors_pb2,
    generation_service_pb2,
    generation_service_pb2_grpc,
    inference_service_pb2,
    inference_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
    training_service_pb2,
    training_service_pb2_grpc,
)
from runtime.artifacts import artifact_store
from runtime.cancel import cancel_and_wait
from runtime.settings import Settings
from scheduler.auth import KeyStore, RateLimiter
from scheduler.connection import check_server, connect, primaries_short_of_replicas
from scheduler.datasets import DatasetStore
from scheduler.generation import GenerationEvents
from scheduler.queue import JobQueue, tenant_policy
from scheduler.registry import ModelRegistry
from scheduler.replies import ReplyStream
from scheduler.shards import Shards
from scheduler.training import TrainingStore
from scheduler.workers import WorkerDirectory

log = logging.getLogger(__name__)

SERVICES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    training_service_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name,
    dataset_service_pb2.DESCRIPTOR.services_by_name["DatasetService"].full_name,
    inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
    key_service_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
    generation_service_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name,
)


STOP_TASKS_S = 2.0  # the longest a stopping gateway waits for its reader and sender


@dataclass
class Gateway:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    plane: InferencePlane
    gate: DrainInterceptor = field(default_factory=DrainInterceptor)
    in_flight: Callable[[], int] = lambda: 0  # inference calls waiting for a result

    async def drain(self, grace_s: float) -> None:
        """NOT_SERVING, refuse new calls (UNAVAILABLE + RetryInfo), let in-flight calls
        finish within the grace (gateway/drain.py)."""
        self.plane.is_ready = False
        await drain(self.server, self.health, self.gate, self.in_flight, grace_s)


def grpc_options(max_message_bytes: int,
                 max_connection_age_s: float = 0.0) -> list[tuple[str, int]]:
    # gRPC's hard limit sits above the setting so that the servicers, not the transport,
    # refuse a request that is too large, with a message that names the setting.
    hard = min(2 * max_message_bytes + (1 << 20), 2**31 - 1)
    age: list[tuple[str, int]] = []
    if max_connection_age_s > 0:
        # GOAWAY after the age (gRPC adds +-10 % jitter): a client behind a Kubernetes
        # Service reconnects and lands on any gateway, new ones included. The grace is
        # unbounded on purpose: calls in flight (a long WatchTrainingJob stream) finish on
        # the old connection; only new calls move.
        age = [("grpc.max_connection_age_ms", min(int(max_connection_age_s * 1000), 2**31 - 1)),
               ("grpc.max_connection_age_grace_ms", 2**31 - 1)]
    return [
        *age,
        ("grpc.max_receive_message_length", hard),
        ("grpc.max_send_message_length", hard),
        ("grpc.so_reuseport", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Never GOAWAY "too many pings": a slow, loaded client's keepalive and flow-control
        # pings must not end a long WatchTrainingJob or ModelStreamInfer stream.
        ("grpc.http2.max_ping_strikes", 0),
    ]


@contextlib.asynccontextmanager
async def serve(settings: Settings, *, port: int | None = None) -> AsyncIterator[Gateway]:
    """Runs a gateway until the context exits; yields it once it is listening."""
    redis = connect(settings.redis_url)
    await check_server(redis)
    if settings.redis_wait_replicas and (short := await primaries_short_of_replicas(
            redis, settings.redis_wait_replicas)):
        log.warning("MAAS_REDIS_WAIT_REPLICAS=%d, but %s has fewer connected replicas: its "
                    "submits are refused (UNAVAILABLE) until enough replicas connect",
                    settings.redis_wait_replicas, ", ".join(short) or "the Redis")
    gateway_id = uuid.uuid4().hex[:12]
    queue = JobQueue(redis, result_ttl_ms=int(settings.infer_result_ttl_s * 1000),
                     max_depth=settings.max_queue_depth, tenants=tenant_policy(settings),
                     wait_replicas=settings.redis_wait_replicas,
                     wait_timeout_ms=settings.redis_wait_timeout_ms,
                     shards=Shards(settings.model_shard_counts))
    registry = ModelRegistry(redis)
    replies = ReplyDispatcher(lambda model: ReplyStream(redis, gateway_id, model))
    submitter = SubmitCoalescer(queue)
    workers = WorkerDirectory(redis)
    plane = InferencePlane(settings, submitter, registry, workers, replies)
    generation = GenerationPlane(plane, queue, registry, replies, GenerationEvents(
        redis, int(settings.infer_result_ttl_s * 1000)))
    artifacts = artifact_store(settings)
    key_store = KeyStore(redis)
    limiter = (RateLimiter(redis, settings.tenant_rate_per_s) if settings.tenant_rate_per_s
               else None)
    gate = DrainInterceptor()
    admission = await build_auth(settings, key_store, limiter)
    server = grpc.aio.server(
        interceptors=[gate, *admission.interceptors(), ErrorInterceptor()],
        options=grpc_options(settings.max_message_bytes,
                             settings.max_connection_age_s))
    services = HotMethodsOnly(server)  # only the hot methods on grpc's registered path
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(
        plane, ModelRepository(registry, queue, artifacts, settings.verify_timeout_s),
        generation), services)
    generation_service_pb2_grpc.add_GenerationServiceServicer_to_server(
        GenerationServicer(generation), services)
    datasets = DatasetStore(redis)
    model_service = ModelServicer(registry, queue, artifacts, settings.max_message_bytes,
                                  settings.verify_timeout_s, settings.max_model_bytes,
                                  settings.upload_ttl_s)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(model_service, services)
    training_service_pb2_grpc.add_TrainingServiceServicer_to_server(
        TrainingServicer(settings, TrainingStore(redis, queue, settings.tenant_max_training),
                         registry, datasets), services)
    dataset_service_pb2_grpc.add_DatasetServiceServicer_to_server(
        DatasetServicer(Datasets(datasets, artifacts, settings.max_dataset_bytes)), services)
    key_service_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(key_store), services)
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(
        JobServicer(settings, queue, registry, Explainer(settings, registry, plane), workers),
        services)
    queue_service_pb2_grpc.add_QueueServiceServicer_to_server(
        QueueAdminServicer(queue, registry, workers), services)
    # + `model/<name>` readiness, in the caller's tenant (an API key needed with auth on)
    health_servicer = GatewayHealth(plane.model_ready, admission)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    for name in ("", *SERVICES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    enable_reflection(services, (*SERVICES, health.SERVICE_NAME), reflection_pool(
        (grpc_service_pb2.DESCRIPTOR, model_service_pb2.DESCRIPTOR,
         training_service_pb2.DESCRIPTOR, dataset_service_pb2.DESCRIPTOR,
         inference_service_pb2.DESCRIPTOR, queue_service_pb2.DESCRIPTOR,
         key_service_pb2.DESCRIPTOR, errors_pb2.DESCRIPTOR,
         generation_service_pb2.DESCRIPTOR)))
    address = f"{settings.gateway_host}:{settings.gateway_port if port is None else port}"
    credentials = server_credentials(settings)
    bound = (server.add_secure_port(address, credentials) if credentials is not None
             else server.add_insecure_port(address))
    await server.start()
    reader = asyncio.create_task(replies.run(), name="reply-dispatcher")
    sender = asyncio.create_task(submitter.run(), name="submit-coalescer")
    sweeper = asyncio.create_task(model_service.lifecycle.uploads.sweep_forever(),
                                  name="upload-sweeper")
    log.info("gateway %s listening on %s:%d (%s, auth %s)", gateway_id, settings.gateway_host,
             bound, "mutual TLS" if settings.tls_client_ca_file else
             "TLS" if credentials is not None else "plaintext", settings.auth)
    try:
        yield Gateway(server, bound, health_servicer, plane, gate, lambda: replies.waiting)
    finally:
        await server.stop(settings.shutdown_grace_s)
        # Bounded: a reply read cancelled while its connection is still being made may not
        # end at once (redis-py), and a stop must not hang on it.
        await cancel_and_wait(reader, sender, sweeper, timeout_s=STOP_TASKS_S)
        await queue.aclose()
        await redis.aclose()
