"""What already keeps to a Redis Cluster's terms (issue #15). The API-key store: its keys
share the `{auth}` hash tag, so ADMIN_BOOTSTRAP and the store's MULTIs stay in one slot; keys
an older gateway stored under untagged names are adopted at start and keep working. The model
registry: a version's MULTI touches only its model's record (the model list apart).

The cluster is one redis-server with cluster mode on that owns every slot, and the scripts
are loaded with a `#!lua` shebang (tests/cluster_node.py): Redis itself then refuses what a
cluster refuses — keys of several slots in one script or MULTI (CROSSSLOT), or an undeclared
key of another slot. The queue's own tests (test_queue.py, test_queue_lean.py) run on it too."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from maas.api_keys import key_id_of, key_sha256, new_api_key
from maas.v1.key_service_pb2 import ApiKey
from maas.v1.model_service_pb2 import ModelVersion
from scheduler import keys
from scheduler.auth import Bootstrap, KeyStore
from scheduler.connection import connect
from scheduler.registry import ModelRegistry

ADMIN = ("admin", "infer")


@pytest.fixture
async def cluster_client(slot_checked_url: str) -> AsyncIterator[aioredis.Redis]:
    c = connect(slot_checked_url)
    yield c
    await c.aclose()


def test_the_store_keys_share_one_slot() -> None:
    slots = {key_slot(k.encode()) for k in (
        keys.api_key("a" * 16), keys.api_key("b" * 16), keys.api_keys(),
        keys.admin_bootstrap())}
    assert len(slots) == 1


async def test_bootstrap_install_and_revoke_on_a_cluster(cluster_client: aioredis.Redis) -> None:
    store = KeyStore(cluster_client)
    admin_key = new_api_key()
    assert await store.bootstrap_admin(admin_key, "admin", ADMIN) == Bootstrap.INSTALLED
    assert await store.bootstrap_admin(admin_key, "admin", ADMIN) == Bootstrap.ACTIVE
    key, record = await store.create("acme", ("infer",))
    assert (await store.lookup(key)) == record
    assert {k.key_id for k in await store.list()} == {key_id_of(admin_key), record.key_id}
    await store.revoke(record.key_id)
    assert await store.lookup(key) is None
    assert await store.adopt_untagged() == 0  # nothing untagged, nothing cross-slot sent


def _store_untagged(client: redis.Redis, api_key: str, tenant: str, bootstrap: bool) -> str:
    """What a gateway before the `{auth}` tag wrote for a key."""
    key_id = key_id_of(api_key)
    assert key_id is not None
    client.hset(f"{keys.PREFIX}:apikey:{key_id}", mapping={
        "sha256": key_sha256(api_key),
        "record": ApiKey(key_id=key_id, tenant=tenant, scopes=["infer"]).SerializeToString()})
    client.sadd(f"{keys.PREFIX}:apikeys", key_id)
    if bootstrap:
        client.set(f"{keys.PREFIX}:admin:bootstrap", key_id)
    return key_id


async def test_keys_of_an_older_gateway_are_adopted(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    old_admin, old_tenant = new_api_key(), new_api_key()
    admin_id = _store_untagged(sync, old_admin, "admin", bootstrap=True)
    _store_untagged(sync, old_tenant, "acme", bootstrap=False)
    client = connect(redis_url)
    try:
        store = KeyStore(client)
        assert await store.lookup(old_tenant) is None  # before: under names it no longer reads
        assert await store.adopt_untagged() == 4  # two hashes, the marker, the set
        assert (await store.lookup(old_tenant)).tenant == "acme"  # type: ignore[union-attr]
        assert (await store.lookup(old_admin)) is not None
        # The bootstrap happened before: the admin key file's key is not installed again.
        assert await store.bootstrap_admin(new_api_key(), "admin", ADMIN) == Bootstrap.REFUSED
        assert sync.get(keys.admin_bootstrap()) == admin_id.encode()
        assert not sync.keys(f"{keys.PREFIX}:apikey*") and not sync.exists(
            f"{keys.PREFIX}:admin:bootstrap")
        # A rolling upgrade: an older gateway stores one more key; the next start merges it.
        newer, later = await store.create("globex", ("infer",))
        late = new_api_key()
        _store_untagged(sync, late, "initech", bootstrap=False)
        assert await store.adopt_untagged() == 2
        assert {k.tenant for k in await store.list()} == {"admin", "acme", "globex", "initech"}
        assert (await store.lookup(newer)) == later
        assert await store.adopt_untagged() == 0
    finally:
        await client.aclose()
        sync.close()


async def test_registering_versions_on_a_cluster(cluster_client: aioredis.Redis) -> None:
    registry = ModelRegistry(cluster_client)
    for _ in range(2):
        await registry.add_version(ModelVersion(model="m", architecture="mlp",
                                                weights_sha256="a" * 64))
    await registry.add_version(ModelVersion(model="m", architecture="mlp",
                                            weights_sha256="b" * 64), is_latest=False)
    model = await registry.get_model("m")
    assert [v.version for v in model.versions] == ["1", "2", "3"]
    assert model.latest_version == "2"
    assert await registry.model_names() == ["m"]
