"""Training (gateway/plane/training.py) on a real redis-server, without a gRPC server: specs
checked at the door, jobs queued, read, listed, cancelled and watched, per tenant."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from gateway.plane.training import Training
from maas.errors import (
    FailedPrecondition,
    IdempotencyKeyReused,
    InvalidArgument,
    QuotaExceeded,
    TrainingJobNotFound,
)
from maas.v1 import dataset_service_pb2 as dpb
from maas.v1 import training_service_pb2 as pb
from runtime.settings import Settings
from scheduler import keys
from scheduler.datasets import DatasetStore
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry
from scheduler.training import TrainingStore

pytestmark = pytest.mark.timeout(30)


def training(client: aioredis.Redis, max_active: int = 0, **settings: int) -> Training:
    store = TrainingStore(client, JobQueue(client), max_active)
    return Training(Settings(**settings), store, ModelRegistry(client),
                    DatasetStore(client))


@pytest.fixture
def plane(client: aioredis.Redis) -> Training:
    return training(client)


def create(name: str = "digits-mlp", request_id: str = "", **spec: object
           ) -> pb.CreateTrainingJobRequest:
    fields: dict[str, object] = {"architecture": "mlp", "dataset": "digits", "max_steps": 1}
    fields.update(spec)
    return pb.CreateTrainingJobRequest(spec=pb.TrainingSpec(model_name=name, **fields),
                                       request_id=request_id)


async def test_a_job_is_queued_and_shown_by_names(plane: Training) -> None:
    job = await plane.create(create(), tenant="acme")
    assert job.state == pb.TrainingJob.QUEUED and len(job.job_id) == 32
    assert job.spec.model_name == "digits-mlp" and job.spec.dataset == "digits"
    assert job.dataset_sha256 and job.create_time.seconds > 0
    assert (await plane.get(job.job_id, "acme")).job_id == job.job_id
    with pytest.raises(TrainingJobNotFound):
        await plane.get(job.job_id, "other")


async def test_a_request_id_finds_the_same_job_or_refuses_another_spec(plane: Training) -> None:
    first = await plane.create(create(request_id="r"), tenant="")
    assert (await plane.create(create(request_id="r"), tenant="")).job_id == first.job_id
    with pytest.raises(IdempotencyKeyReused):
        await plane.create(create(request_id="r", max_steps=2), tenant="")


async def test_jobs_are_listed_newest_first_a_page_at_a_time(plane: Training,
                                                             client: aioredis.Redis) -> None:
    ids = [(await plane.create(create(), tenant="acme")).job_id for _ in range(5)]
    await plane.create(create(), tenant="other")
    # Three of them created in one millisecond: a page boundary among them skips none.
    await client.zadd(keys.training_index("acme"), dict.fromkeys(ids[1:4], 1_765_000_000_000))
    seen, token = [], ""
    for _ in range(3):
        page, token = await plane.list_jobs(2, token, "acme")
        seen += [j.job_id for j in page]
        if not token:
            break
    assert sorted(seen) == sorted(ids) and not token
    with pytest.raises(InvalidArgument):
        await plane.list_jobs(2, "not-a-score", "acme")


async def test_a_job_whose_record_expired_leaves_the_list(plane: Training,
                                                          client: aioredis.Redis) -> None:
    kept, gone = [(await plane.create(create(), tenant="acme")).job_id for _ in range(2)]
    await client.delete(keys.job(keys.TRAINING_QUEUE, gone))  # a dead letter's TTL passed
    page, _ = await plane.list_jobs(10, "", "acme")
    assert [j.job_id for j in page] == [kept]
    assert await client.zscore(keys.training_index("acme"), gone) is None


async def test_cancel_ends_a_queued_job_and_the_watch(plane: Training) -> None:
    job = await plane.create(create(), tenant="acme")
    with pytest.raises(TrainingJobNotFound):
        await plane.cancel(job.job_id, "other")
    assert (await plane.cancel(job.job_id, "acme")).state == pb.TrainingJob.CANCELLED
    with pytest.raises(FailedPrecondition):
        await plane.cancel(job.job_id, "acme")
    states = [e.state async for e in plane.watch(job.job_id, 0, "acme")]
    assert states == [pb.TrainingJob.QUEUED, pb.TrainingJob.CANCELLED]
    assert [e.state async for e in plane.watch(job.job_id, 1, "acme")] == [
        pb.TrainingJob.CANCELLED]


@pytest.mark.parametrize(("spec", "field"), [
    ({"name": "bad name"}, "spec.model_name"),
    ({"dataset": "nope"}, "spec.dataset"),
    ({"architecture": "no-such-arch"}, "spec.architecture"),
    ({"config_json": '{"num_classes": 2}'}, "spec.dataset.labels"),
    ({"config_json": '{"in_features": 10}'}, "spec.dataset"),
    ({"init_from": "missing"}, "spec.init_from"),
    ({"replicas": 9}, "spec.replicas"),
    ({"config_json": '{"hidden": [4096, 4096]}'}, "spec.config"),
])
async def test_a_spec_the_cluster_cannot_train_is_invalid(
        client: aioredis.Redis, spec: dict[str, object], field: str) -> None:
    plane = training(client, train_max_params=1_000_000)
    name = str(spec.pop("name", "m"))
    with pytest.raises(InvalidArgument) as caught:
        await plane.create(create(name, **spec), tenant="acme")
    assert caught.value.violations[0].field.startswith(field), caught.value


async def test_an_uploaded_dataset_is_the_tenants(client: aioredis.Redis,
                                                  plane: Training) -> None:
    record = dpb.Dataset(name="mine", sha256="ab" * 32, num_samples=4, feature_shape=[64],
                         num_classes=3, format="npz")
    await DatasetStore(client).put(record, "acme")
    job = await plane.create(create(dataset="mine"), tenant="acme")
    assert job.spec.dataset == "mine" and job.dataset_sha256 == "ab" * 32
    with pytest.raises(InvalidArgument):
        await plane.create(create(dataset="mine"), tenant="other")


async def test_a_tenant_over_its_training_quota_is_refused(client: aioredis.Redis) -> None:
    plane = training(client, max_active=1)
    await plane.create(create(), tenant="acme")
    with pytest.raises(QuotaExceeded, match="MAAS_TENANT_MAX_TRAINING=1"):
        await plane.create(create(), tenant="acme")
    await plane.create(create(), tenant="other")


async def test_gpt_trains_on_addition_and_its_prompts_must_fit(client: aioredis.Redis,
                                                                plane: Training) -> None:
    """A generative model's labels are prompt lengths: below a sample's token count."""
    job = await plane.create(create(architecture="gpt", dataset="addition"), tenant="acme")
    assert job.spec.architecture == "gpt" and job.dataset_sha256
    record = dpb.Dataset(name="long-prompts", sha256="cd" * 32, num_samples=4,
                         feature_shape=[6], num_classes=7, format="npz")
    await DatasetStore(client).put(record, "acme")
    for spec, field in (({"dataset": "long-prompts"}, "spec.dataset.labels"),
                        ({"dataset": "digits"}, "spec.dataset"),
                        ({"config_json": '{"vocab_size": 100}'}, "spec.config.vocab_size")):
        with pytest.raises(InvalidArgument) as caught:
            await plane.create(create(**{"architecture": "gpt", "dataset": "addition", **spec}),
                               tenant="acme")
        assert caught.value.violations[0].field == field, caught.value
