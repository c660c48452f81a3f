"""Garbage collection of weights and archives that no model version references.

Deleting a version removes its record first (MODEL_VERSION_DELETE, atomic); its artifact goes
afterwards, once no version of any model (of any tenant) references its sha256: a crash in
between leaves an artifact over, never a version without its artifact. `free` collects the
artifacts of a version just deleted; the daemon's `sweep` collects every leftover.

References are read from the model records themselves (each version's `weights_sha256` and
`archive_sha256`), not from an index: nothing to backfill, nothing to drift. What may be
referenced soon is spared by time: an artifact is deleted only when it was last touched
(written, or stored again by a registration that found it there, see runtime/artifacts.py)
more than `grace_s` ago, and the store re-checks that time just before it deletes.

A registration of bytes the store already holds reuses them, so between the store's re-check
and its delete one could still touch an artifact the collector is about to delete and then
write its version. Redis closes that window, each side writing its own key before it reads
the other's (keys.artifact_collecting, keys.artifact_pending):
- the collector marks what it is about to delete (`collecting`, a TTL), then reads the
  pending registrations, then the references, and deletes only what neither names; it
  removes each mark once it deleted or spared that artifact, and deletes nothing after
  MARK_DEADLINE_S (the rest waits for the next round, long before a mark could expire);
- a registration (`PendingReferences.held`) adds itself to the artifact's `pending` set,
  then waits while the artifact is marked, and only then stores it (reusing it or writing
  its own copy, as it finds it) and writes its version, and leaves the set after.
Whichever writes second sees the other's key: the collector spares the artifact, or the
registration waits until the delete is over and stores the bytes again. Datasets and
training jobs' directories are never collected; a node's cached copy stays until its cache
evicts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import cast

import redis.asyncio as aioredis

from maas.errors import Unavailable
from maas.v1.model_service_pb2 import ModelVersion
from runtime.artifacts import ArtifactStore, StoredArtifact
from scheduler import keys
from scheduler.redis_types import Fields

log = logging.getLogger(__name__)

GRACE_S = 3600.0  # far longer than any registration takes from storing to its version
SWEEP_PERIOD_S = 600.0
_MODELS_PER_ROUND_TRIP = 100
# A collector that dies leaves its marks this long at most. No delete starts later than
# MARK_DEADLINE_S after marking, and one delete ends within the S3 client's worst case
# (3 attempts of a 5 s connect + 60 s read): the marks outlive every delete.
MARK_TTL_MS = 300_000
MARK_DEADLINE_S = 30.0
MARKED_PER_ROUND = 100  # artifacts marked, checked and deleted together
PENDING_TTL_MS = 3_600_000  # as long as the grace period: a registration that dies
WAIT_POLL_S = 0.05


def artifacts_of(version: ModelVersion) -> set[tuple[str, str]]:
    """(kind, sha256) of what a version references."""
    found = set()
    if version.weights_sha256:
        found.add(("weights", version.weights_sha256))
    if version.archive_sha256:
        found.add(("archives", version.archive_sha256))
    return found


class ArtifactCollector:
    def __init__(self, client: aioredis.Redis, store: ArtifactStore,
                 grace_s: float = GRACE_S) -> None:
        self._redis = client
        self._store = store
        self.grace_s = grace_s

    async def referenced(self) -> set[tuple[str, str]]:
        """(kind, sha256) of every artifact some version of some model references now."""
        names = sorted(cast("set[bytes]", await self._redis.smembers(keys.models())))
        found: set[tuple[str, str]] = set()
        for start in range(0, len(names), _MODELS_PER_ROUND_TRIP):
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names[start:start + _MODELS_PER_ROUND_TRIP]:
                    pipe.hgetall(keys.model_record(name.decode()))
                records = cast("list[Fields]", await pipe.execute())
            for record in records:
                for field, value in record.items():
                    if field.startswith(b"v:"):
                        found |= artifacts_of(ModelVersion.FromString(value))
        return found

    async def free(self, version: ModelVersion, now_s: float | None = None) -> int:
        """Deletes the artifacts of a deleted version that nothing references any more and
        that are past their grace period (the sweep takes the others later)."""
        return await self._collect(artifacts_of(version), now_s)

    async def sweep(self, now_s: float | None = None) -> int:
        """Deletes every unreferenced artifact past its grace period; how many."""
        stored = await asyncio.to_thread(self._store.list_artifacts)
        return await self._collect(((a.kind, a.sha256) for a in stored
                                    if a.touched_s < self._cutoff(now_s)), now_s)

    async def _collect(self, candidates: Iterable[tuple[str, str]],
                       now_s: float | None) -> int:
        """Listed (or named) first; then, a round at a time, marked, pending registrations
        read, references read again, deleted (see the module's docstring)."""
        wanted = set(candidates)
        if not wanted:
            return 0
        doomed = sorted(wanted - await self.referenced())
        deleted = 0
        for start in range(0, len(doomed), MARKED_PER_ROUND):
            deleted += await self._collect_marked(doomed[start:start + MARKED_PER_ROUND],
                                                  self._cutoff(now_s))
        return deleted

    async def _collect_marked(self, doomed: list[tuple[str, str]], cutoff: float) -> int:
        token, marked_at = uuid.uuid4().hex, time.monotonic()
        deleted = 0
        try:
            for kind, sha256 in doomed:  # a set of collectors' tokens: two may overlap
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.sadd(keys.artifact_collecting(kind, sha256), token)
                    pipe.pexpire(keys.artifact_collecting(kind, sha256), MARK_TTL_MS)
                    await pipe.execute()
            spared = await self._pending(doomed) | await self.referenced()
            for kind, sha256 in doomed:
                if time.monotonic() - marked_at > MARK_DEADLINE_S:
                    break  # the next round takes the rest
                if (kind, sha256) not in spared and await asyncio.to_thread(
                        self._store.delete, kind, sha256, cutoff):
                    log.info("deleted unreferenced %s %s", kind, sha256)
                    deleted += 1
                await self._redis.srem(keys.artifact_collecting(kind, sha256), token)
        finally:
            async with self._redis.pipeline(transaction=False) as pipe:
                for kind, sha256 in doomed:
                    pipe.srem(keys.artifact_collecting(kind, sha256), token)
                await pipe.execute()
        return deleted

    async def _pending(self, doomed: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of `doomed` a registration is storing now."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for kind, sha256 in doomed:
                pipe.exists(keys.artifact_pending(kind, sha256))
            found = await pipe.execute()
        return {artifact for artifact, n in zip(doomed, found, strict=True) if n}

    def _cutoff(self, now_s: float | None) -> float:
        return (time.time() if now_s is None else now_s) - self.grace_s


class PendingReferences:
    """The registrations' side: an artifact held while it is stored and its version
    written is never collected meanwhile."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    @contextlib.asynccontextmanager
    async def held(self, kind: str, sha256: str) -> AsyncIterator[None]:
        """Store `kind` ("weights" or "archives") `sha256` and write the version referencing
        it inside the block. Entering waits while a collector is deleting it."""
        pending, token = keys.artifact_pending(kind, sha256), uuid.uuid4().hex
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(pending, token)
            pipe.pexpire(pending, PENDING_TTL_MS)
            await pipe.execute()
        try:
            await self._unmarked(kind, sha256)
            yield
        finally:
            await self._redis.srem(pending, token)

    async def _unmarked(self, kind: str, sha256: str) -> None:
        deadline = time.monotonic() + MARK_TTL_MS / 1000
        while await self._redis.exists(keys.artifact_collecting(kind, sha256)):
            if time.monotonic() > deadline:
                raise Unavailable(f"{kind} {sha256} is being garbage-collected; try again",
                                  retry_delay_s=1.0)
            await asyncio.sleep(WAIT_POLL_S)


__all__ = ["GRACE_S", "SWEEP_PERIOD_S", "ArtifactCollector", "PendingReferences",
           "StoredArtifact", "artifacts_of"]
