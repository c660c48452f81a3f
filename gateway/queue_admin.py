"""maas.v1.QueueService: inspect and re-drive a model's dead letters; list the live workers;
the queue statistics of the caller's models (the work is QueueStatsView's,
gateway/plane/queues.py)."""

from __future__ import annotations

import grpc

from gateway.bounds import page_size
from gateway.plane.queues import QueueStatsView
from maas.v1 import queue_service_pb2 as pb
from maas.v1.queue_service_pb2_grpc import QueueServiceServicer
from runtime.queue.v1.queue_pb2 import WorkerHeartbeat
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry
from scheduler.workers import WorkerDirectory

DEFAULT_PAGE_SIZE = 100


class QueueAdminServicer(QueueServiceServicer):
    def __init__(self, queue: JobQueue, registry: ModelRegistry,
                 workers: WorkerDirectory) -> None:
        self._queue = queue
        self._registry = registry
        self._workers = workers
        self._stats = QueueStatsView(queue, registry, workers)

    async def ListDeadLetters(self, request: pb.ListDeadLettersRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListDeadLettersResponse:
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE)
        await self._registry.resolve(request.model)  # NOT_FOUND for unknown models
        letters = await self._queue.dead_letters(request.model, size)
        out = pb.ListDeadLettersResponse()
        for letter in letters:
            item = out.dead_letters.add(job_id=letter.job_id, attempts=letter.attempts,
                                        reason="MAX_ATTEMPTS", redrivable=letter.redrivable)
            item.time.FromMilliseconds(int(letter.entry_id.split("-")[0]))
        return out

    async def RedriveDeadLetters(self, request: pb.RedriveDeadLettersRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> pb.RedriveDeadLettersResponse:
        await self._registry.resolve(request.model)
        done = await self._queue.redrive(request.model, list(request.job_ids))
        return pb.RedriveDeadLettersResponse(job_ids=done)

    async def ListWorkers(self, request: pb.ListWorkersRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListWorkersResponse:
        live = await self._workers.live(max_age_s=0)
        return pb.ListWorkersResponse(
            workers=[_worker(w) for w in sorted(live, key=lambda w: w.worker_id)])

    async def GetQueueStats(self, request: pb.GetQueueStatsRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetQueueStatsResponse:
        models, token = await self._stats.stats(request.model, request.page_size,
                                                request.page_token)
        return pb.GetQueueStatsResponse(models=models, next_page_token=token)


def _worker(beat: WorkerHeartbeat) -> pb.Worker:
    out = pb.Worker(worker_id=beat.worker_id, hostname=beat.hostname, device=beat.device,
                    serves=beat.serves, loaded=beat.models,
                    model_memory_bytes=beat.model_memory_bytes,
                    model_memory_budget_bytes=beat.model_memory_budget_bytes,
                    batches=beat.batches, jobs=beat.jobs)
    out.start_time.FromMilliseconds(beat.started_unix_ms)
    out.heartbeat_time.FromMilliseconds(beat.sent_unix_ms)
    return out
