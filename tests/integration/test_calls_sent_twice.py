"""A script call whose reply is lost with its connection is sent again (redis-py's retry, or,
on a Redis Cluster that failed over, a resend to the replica that took over and already holds
the first). A submit must not queue its jobs twice: CI saw it once as a job answered twice
after a primary was killed (tests/faults/test_redis_cluster_faults.py,
MAAS_REDIS_WAIT_REPLICAS=1). A START must not drop the job it started (docs/queue-protocol.md,
"A call sent twice").

Real parts: a redis-server of this module's own, reached through a TCP proxy that drops the
reply of one command and closes that connection (the server ran the command), and the
client maas's processes use (`scheduler.connection.connect`, with its retries)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from maas.v1 import training_service_pb2 as tpb
from runtime.queue.v1.queue_pb2 import InferTask, JobEnvelope, JobKind, TrainTask
from scheduler import keys
from scheduler.connection import connect
from scheduler.gangs import GangStore
from scheduler.queue import JobQueue, SubmitStatus, new_job_id
from scheduler.training import TrainingStore
from tests.conftest import RedisServer, running_redis_server
from tests.faults.tcp_proxy import BlackholeProxy


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Its own server: the training queue's stream is one for every test that trains."""
    with running_redis_server(tmp_path_factory.mktemp("redis-sent-twice")) as s:
        yield s


@pytest.fixture
def proxy(server: RedisServer) -> Iterator[BlackholeProxy]:
    p = BlackholeProxy(server.port).start()
    yield p
    p.stop()


@pytest.fixture
async def client(proxy: BlackholeProxy) -> AsyncIterator[aioredis.Redis]:
    c = connect(proxy.url)
    await c.ping()  # connected (and its handshake answered) before a reply is cut
    yield c
    await c.aclose()


def envelope(model: str, *, reply_to: str = "") -> JobEnvelope:
    return JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER, model=model,
                       model_version="1", reply_to=reply_to, max_attempts=3,
                       infer=InferTask(request_id="r"))


async def entries_by_job(server: RedisServer, stream: str) -> Counter[str]:
    direct = aioredis.Redis(port=server.port)
    try:
        return Counter(fields[b"job"].decode()
                       for _, fields in await direct.xrange(stream))
    finally:
        await direct.aclose()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "hashed"])
async def test_a_submit_sent_again_queues_nothing_twice(
        client: aioredis.Redis, proxy: BlackholeProxy, server: RedisServer,
        lean: bool) -> None:
    model = f"twice-{'lean' if lean else 'hashed'}"
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(model)
    jobs = [envelope(model, reply_to=keys.reply_stream(model, "gw")) for _ in range(4)]
    await queue.submit_many(jobs[:1], lean=lean)  # the scripts loaded: the next call runs
    proxy.cut_next_reply()
    answers = await queue.submit_many(jobs[1:], lean=lean)
    assert proxy.cuts == 1  # the reply was lost: the client sent the pipeline again
    assert answers == [(SubmitStatus.CREATED, j.job_id) for j in jobs[1:]]
    assert await entries_by_job(server, keys.stream(model)) == {j.job_id: 1 for j in jobs}


async def test_a_lean_submit_sent_again_answers_as_the_first(
        client: aioredis.Redis, server: RedisServer) -> None:
    """The receipt keeps each job's answer: one accepted, one refused for a full queue."""
    model = "twice-full"
    queue = JobQueue(client, result_ttl_ms=60_000, max_depth=1)
    await queue.ensure_group(model)
    jobs = [envelope(model, reply_to=keys.reply_stream(model, "gw")) for _ in range(2)]
    [call] = queue._submit_units(jobs, True)
    first = await queue._pipelined([call])
    again = await queue._pipelined([call])
    assert [row[0] for row in first[0]] == [b"OK", b"FULL"]
    assert [row[0] for row in again[0]] == [b"OK", b"FULL"]
    assert await entries_by_job(server, keys.stream(model)) == {jobs[0].job_id: 1}
    receipt = keys.receipt(model, jobs[0].job_id)
    assert 0 < await client.pttl(receipt) <= 60_000  # it does not stay


async def test_a_training_job_created_again_is_queued_once(
        client: aioredis.Redis, proxy: BlackholeProxy, server: RedisServer) -> None:
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(keys.TRAINING_QUEUE)
    spec = tpb.TrainingSpec(model_name="m", architecture="mlp", dataset="digits",
                            batch_size=32)
    store = TrainingStore(client, queue)

    async def create() -> tuple[SubmitStatus, str]:
        job = tpb.TrainingJob(job_id=new_job_id(), spec=spec, state=tpb.TrainingJob.QUEUED)
        return await store.create(job, JobEnvelope(
            job_id=job.job_id, kind=JobKind.JOB_KIND_TRAIN, model=keys.TRAINING_QUEUE,
            max_attempts=3, train=TrainTask(spec=spec)))

    await create()  # the script loaded: the next call runs
    proxy.cut_next_reply()
    status, job_id = await create()
    assert proxy.cuts == 1
    assert status == SubmitStatus.CREATED
    assert (await entries_by_job(server, keys.stream(keys.TRAINING_QUEUE)))[job_id] == 1
    direct = aioredis.Redis(port=server.port)
    try:
        assert await direct.xlen(keys.training_events(job_id)) == 1  # one QUEUED event
    finally:
        await direct.aclose()


async def test_a_start_sent_again_runs_the_job_and_keeps_its_lease(
        client: aioredis.Redis, proxy: BlackholeProxy, server: RedisServer) -> None:
    """START's reply lost and START sent again: the job still runs, once, and stays in the
    pending list, where REAP finds it if its worker dies. (Taken for a stale entry, the second
    START acked it while the job stayed RUNNING: no worker ran it and none ever would.)"""
    model = "twice-start"
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(model)
    warm, job = envelope(model), envelope(model)
    await queue.submit_many([warm, job])
    [first] = await queue.read("w1", [model], 1, block_ms=None)
    assert (await queue.start("w1", [first])).runnable  # the script loaded
    [delivery] = await queue.read("w1", [model], 1, block_ms=None)
    assert delivery.job_id == job.job_id
    proxy.cut_next_reply()
    outcome = await queue.start("w1", [delivery])
    assert proxy.cuts == 1
    assert [(s.delivery.job_id, s.attempt) for s in outcome.runnable] == [(job.job_id, 1)]
    direct = aioredis.Redis(port=server.port)
    try:
        state = await direct.hmget(keys.job(model, job.job_id), "state", "owner", "attempt")
        assert state == [b"RUNNING", b"w1", b"1"]
        pending = await direct.xpending_range(keys.stream(model), keys.GROUP, "-", "+", 10)
        assert delivery.entry_id.encode() in {p["message_id"] for p in pending}
    finally:
        await direct.aclose()


async def test_a_training_update_sent_again_writes_its_events_once(
        client: aioredis.Redis, proxy: BlackholeProxy, server: RedisServer) -> None:
    """Progress events are appended once, and the job's own terminal update sent again is
    not taken for a lost lease."""
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(keys.TRAINING_QUEUE)
    store = TrainingStore(client, queue)
    gangs = GangStore(client, timeout_s=5, lease_ms=10_000, result_ttl_ms=60_000)
    spec = tpb.TrainingSpec(model_name="m", architecture="mlp", dataset="digits",
                            batch_size=32)
    job = tpb.TrainingJob(job_id=new_job_id(), spec=spec, state=tpb.TrainingJob.QUEUED)
    await store.create(job, JobEnvelope(job_id=job.job_id, kind=JobKind.JOB_KIND_TRAIN,
                                        model=keys.TRAINING_QUEUE, max_attempts=3,
                                        train=TrainTask(spec=spec)))
    deliveries = await queue.read("w1", [keys.TRAINING_QUEUE], 100, block_ms=None)
    [delivery] = [d for d in deliveries if d.job_id == job.job_id]
    assert (await gangs.start("w1", delivery)).status == "RUN"
    progress = tpb.TrainingEvent(message="epoch 1")
    assert await store.update("w1", delivery, events=(progress,)) is False  # loaded
    proxy.cut_next_reply()
    assert await store.update("w1", delivery, events=(progress, progress)) is False
    assert proxy.cuts == 1
    proxy.cut_next_reply()
    assert await store.update("w1", delivery, terminal="SUCCEEDED") is False
    assert proxy.cuts == 2
    done = await store.get(job.job_id)
    assert done.state == tpb.TrainingJob.SUCCEEDED
    direct = aioredis.Redis(port=server.port)
    try:  # QUEUED, then the three progress events
        assert await direct.xlen(keys.training_events(job.job_id)) == 4
    finally:
        await direct.aclose()
