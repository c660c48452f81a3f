"""QueueStatsView: the queue statistics of the models a caller may see (QueueService
.GetQueueStats; gateway/queue_admin.py only translates).

Who sees what follows ModelService: a tenant's key sees its own models and the shared catalog,
by name (`registry.visible`), and a name it cannot see is NOT_FOUND, never a hint that another
tenant has it; an admin key (and every call with auth off) sees every model, by id
(`tenant/name`, as ListDeadLetters and RedriveDeadLetters take them). A shared model's numbers
are its whole queue (every tenant's jobs in it, counted, never listed): they are the wait the
caller's own jobs face. The backlog is always the caller's own tenant's. Worker ids go to admin
keys only; a tenant learns how many live workers serve the model.
"""

from __future__ import annotations

from gateway.auth import caller
from gateway.bounds import page_size
from maas.errors import InvalidArgument, ModelNotFound, shown
from maas.v1 import queue_service_pb2 as pb
from runtime.queue.v1.queue_pb2 import WorkerHeartbeat
from scheduler import keys
from scheduler.model_names import check_model_id, check_model_name
from scheduler.queue import JobQueue
from scheduler.queue_stats import QueueStats
from scheduler.registry import ModelRegistry
from scheduler.workers import WorkerDirectory, serves

DEFAULT_PAGE_SIZE = 50
# Each model costs one Redis round trip: a page is cut to this many.
MAX_PAGE_SIZE = 100
PRIORITIES = {"high": pb.QUEUE_PRIORITY_HIGH, "normal": pb.QUEUE_PRIORITY_NORMAL,
              "low": pb.QUEUE_PRIORITY_LOW}


class QueueStatsView:
    def __init__(self, queue: JobQueue, registry: ModelRegistry,
                 workers: WorkerDirectory) -> None:
        self._queue = queue
        self._registry = registry
        self._workers = workers

    async def stats(self, model: str, size: int, page_token: str
                    ) -> tuple[list[pb.ModelQueueStats], str]:
        """A page of the caller's models' queues (or the one `model`), and the next token."""
        count = min(page_size(size, DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
        visible = await self._visible()
        if model:
            if model not in visible:
                raise ModelNotFound(f"model {shown(model)} is not registered")
            page, token = [model], ""
        else:
            self._check_token(page_token)
            names = sorted(n for n in visible if n > page_token)
            page, token = names[:count], (names[count - 1] if len(names) > count else "")
        live = await self._workers.live()
        tenant = caller().tenant
        return [_model_stats(name, await self._queue.stats(visible[name], tenant), live,
                             is_admin=caller().has("admin")) for name in page], token

    async def _visible(self) -> dict[str, str]:
        """name → id of what the caller sees: for an admin, every id is its own name."""
        who = caller()
        if who.has("admin"):
            return {i: i for i in await self._registry.model_names()}
        return await self._registry.visible(who.tenant)

    @staticmethod
    def _check_token(token: str) -> None:
        """A page token is a model as handed out (the last one of the page before)."""
        if not token:
            return
        try:
            (check_model_id if caller().has("admin") else check_model_name)(
                token, field="page_token")
        except InvalidArgument:
            raise InvalidArgument(f"page_token {shown(token)} is not a token this server "
                                  "gave out (pass a response's next_page_token)") from None


def _model_stats(name: str, stats: QueueStats, live: list[WorkerHeartbeat], *,
                 is_admin: bool) -> pb.ModelQueueStats:
    serving = sorted(w.worker_id for w in live if serves(w.serves, stats.model))
    out = pb.ModelQueueStats(
        model=name, shared=not keys.split_model_id(stats.model)[0],
        dead_letters=stats.dead_letters, delayed=stats.delayed, serving_workers=len(serving),
        worker_ids=serving if is_admin else [],
        priorities=[pb.PriorityQueueStats(
            priority=PRIORITIES[s.level], waiting=s.waiting, leased=s.leased,
            oldest_age_seconds=s.oldest_age_s, delivered_total=s.delivered_total,
            tenant_backlog=s.tenant_backlog) for s in stats.levels])
    out.read_time.FromMilliseconds(stats.read_unix_ms)
    return out
