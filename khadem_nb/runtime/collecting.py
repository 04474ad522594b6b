"""Collecting the artifact store: the objects no record of the queue refers to go away.

``collect_artifacts`` marks over every record and sweeps the objects older than
``queue.artifact_grace`` (see ``artifacts.collect``). ``QueueManager.trim`` runs it at once;
a worker runs it every ``SWEEP_EVERY_S``, and where several workers share a queue the one that
takes the keyed store's lease for the round does it, so a fleet reads the records once a round.
"""

from __future__ import annotations

import asyncio
import logging

from ..artifacts.collect import referenced, sweep
from ..artifacts.opening import QueueArtifacts
from ..drivers.base import QueueDriver

logger = logging.getLogger(__name__)

SWEEP_EVERY_S = 600.0  # how often a worker collects its queue's artifact store
SWEEP_LEASE = "artifacts/sweep"  # the keyed store's key that elects the worker of a round


async def collect_artifacts(driver: QueueDriver, artifacts: QueueArtifacts) -> int:
    """Delete the objects of the queue's store that no record refers to and that are older
    than ``queue.artifact_grace``; how many were deleted (0 without a store)."""
    store = artifacts.store() if artifacts.in_use else None
    if store is None:
        return 0
    records = await driver.jobs()
    keep = await asyncio.to_thread(referenced, records, store)
    return await asyncio.to_thread(sweep, store, keep, artifacts.settings.artifact_grace_s)


async def collect_now_and_then(driver: QueueDriver, artifacts: QueueArtifacts) -> None:
    """A worker's service task: every SWEEP_EVERY_S, collect the store if this worker wins the
    round's lease. A failure is logged and the next round tries again."""
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        try:
            if artifacts.in_use and await driver.kv_put_new(SWEEP_LEASE, b"1", ttl_s=SWEEP_EVERY_S * 0.9):
                deleted = await collect_artifacts(driver, artifacts)
                if deleted:
                    logger.info("collected %d unreferenced objects from the artifact store", deleted)
        except Exception as exc:
            logger.warning("could not collect the artifact store: %r", exc)
