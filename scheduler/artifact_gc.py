"""Garbage collection of weights and archives that no model version references.

Deleting a version removes its record first (MODEL_VERSION_DELETE, atomic); its artifact goes
afterwards, once no version of any model (of any tenant) references its sha256: a crash in
between leaves an artifact over, never a version without its artifact. `free` collects the
artifacts of a version just deleted; the daemon's `sweep` collects every leftover.

References are read from the model records themselves (each version's `weights_sha256` and
`archive_sha256`), not from an index: nothing to backfill, nothing to drift. What may be
referenced soon is spared by time: an artifact is deleted only when it was last touched
(written, or stored again by a registration that found it there, see runtime/artifacts.py)
more than `grace_s` ago, so a registration whose version is not yet written keeps it. The
store re-checks that time just before it deletes. Datasets and training jobs' directories are
never collected; a node's cached copy stays until its cache evicts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import cast

import redis.asyncio as aioredis

from maas.v1.model_service_pb2 import ModelVersion
from runtime.artifacts import ArtifactStore, StoredArtifact
from scheduler import keys
from scheduler.redis_types import Fields

log = logging.getLogger(__name__)

GRACE_S = 3600.0  # far longer than any registration takes from storing to its version
SWEEP_PERIOD_S = 600.0
_MODELS_PER_ROUND_TRIP = 100


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
        """Listed (or named) first, references read second: a version written after the
        read touched its artifact first, which the store's delete sees."""
        wanted = set(candidates)
        if not wanted:
            return 0
        doomed = sorted(wanted - await self.referenced())
        cutoff = self._cutoff(now_s)
        deleted = 0
        for kind, sha256 in doomed:
            if await asyncio.to_thread(self._store.delete, kind, sha256, cutoff):
                log.info("deleted unreferenced %s %s", kind, sha256)
                deleted += 1
        return deleted

    def _cutoff(self, now_s: float | None) -> float:
        return (time.time() if now_s is None else now_s) - self.grace_s


__all__ = ["GRACE_S", "SWEEP_PERIOD_S", "ArtifactCollector", "StoredArtifact", "artifacts_of"]
