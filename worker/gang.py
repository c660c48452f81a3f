"""A worker's part in a gang of replicas: wait for it to form, find rank 0, guard its lease.

The atomic steps are scheduler/gangs.py's Lua scripts; this module only waits and watches.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from scheduler.connection import TRANSIENT_ERRORS
from scheduler.gangs import GangSeat, GangStore
from scheduler.queue import Delivery

log = logging.getLogger(__name__)
POLL_S = 0.1
# A member gives up a forming gang this long after its deadline if rank 0 never ended it
# (rank 0 died: no one joins a gang past its deadline, so it can no longer form).
_LATE_MS = 2000


def advertised_host() -> str:
    """This host's address as the other replicas reach it: the pod IP in Kubernetes."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _now_ms() -> int:
    return int(time.time() * 1000)


async def lead_formation(gangs: GangStore, consumer: str, delivery: Delivery,
                         draining: asyncio.Event) -> int:
    """Rank 0 waits for its gang; the generation once formed, 0 when released unformed."""
    while True:
        view = await gangs.view(delivery.job_id)
        if view.rank0 != consumer or view.entry != delivery.entry_id:
            return 0  # not our gang any more (the entry was reclaimed)
        if view.state == "FORMED":
            return view.gen
        if draining.is_set() or _now_ms() >= view.deadline_ms:
            if await gangs.abort(consumer, delivery):
                return (await gangs.view(delivery.job_id)).gen
            log.info("training job %s: gang not formed in %.0f s; back in the queue",
                     delivery.job_id, gangs.timeout_ms / 1000)
            return 0
        await asyncio.sleep(POLL_S)


async def follow_formation(gangs: GangStore, seat: GangSeat,
                           draining: asyncio.Event) -> GangSeat | None:
    """A member waits for its gang; the seat with its generation, None if it never formed."""
    if seat.gen:
        return seat
    while not draining.is_set():
        view = await gangs.view(seat.job_id)
        if view.state == "FORMED":
            return GangSeat(seat.job_id, seat.rank, seat.size, view.gen, seat.envelope)
        if view.state != "FORMING" or _now_ms() > view.deadline_ms + _LATE_MS:
            return None
        await asyncio.sleep(POLL_S)
    return None


async def rendezvous_address(gangs: GangStore, seat: GangSeat, consumer: str,
                             timeout_s: float) -> str:
    """Rank 0's store host:port once it is published; "" if the gang ended first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state, addr = await gangs.beat(seat, consumer)
        if state != "FORMED":
            return ""
        if addr:
            return addr
        await asyncio.sleep(POLL_S)
    return ""


async def guard(gangs: GangStore, seat: GangSeat, consumer: str,
                proc: asyncio.subprocess.Process) -> None:
    """Renews this rank's lease while its process runs; kills it once the gang is broken
    or gone (another rank was lost, or rank 0 ended the job)."""
    period_s = min(gangs.lease_ms / 3000, 1.0)
    while proc.returncode is None:
        try:
            state, _ = await gangs.beat(seat, consumer)
        except TRANSIENT_ERRORS as exc:
            log.warning("gang beat failed: %s", exc)
            state = "FORMED"  # the lease decides; a short outage is not a lost rank
        if state != "FORMED" and proc.returncode is None:
            log.warning("training job %s: gang %s (rank %d); stopping this replica",
                        seat.job_id, state or "gone", seat.rank)
            proc.kill()
            return
        await asyncio.sleep(period_s)
