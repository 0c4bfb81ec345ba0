"""What every worker does in the background, besides its jobs: its heartbeat, claims whose lease
ran out back to their queues, replies left in the outbox sent again, messages whose job was lost
queued again; and the channels' pollers (a mailbox, a long-poll), each restarted with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from plugins.contract import GatewayServices
from plugins.manager import GatewayPlugins
from router.cases import requeue_expired_leases
from router.context import WorkerContext
from router.jobs import send_job
from router.metrics import MetricsFlusher
from router.store import ComplaintStore, ingest_job

log = logging.getLogger("gateway.worker")

PENDING_RECOVERY_AFTER_MS = 60_000
#: Seconds between housekeeping passes; pending recovery runs every ``RECOVER_EVERY`` passes.
TICK_S = 2
RECOVER_EVERY = 15


async def recover_pending(store: ComplaintStore) -> int:
    """Messages stored but never processed (their job lost or expired) are queued again."""
    recovered = 0
    for mid in await store.stale_pending(PENDING_RECOVERY_AFTER_MS):
        job = ingest_job(mid)
        if not await store.job_exists(job.job_id):
            await store.enqueue(job)
            recovered += 1
    if recovered:
        log.warning("re-queued %d messages whose processing job was lost", recovered)
    return recovered


async def resend_overdue(store: ComplaintStore) -> int:
    """Replies whose inline send never completed (a crash) get a send job."""
    overdue = await store.overdue_outbox()
    if overdue:
        await store.enqueue(*(send_job(cid, rid) for cid, rid in overdue))
        log.warning("re-sending %d replies left in the outbox", len(overdue))
    return len(overdue)


async def housekeeping(w: WorkerContext) -> None:
    """Until cancelled, every ``TICK_S``; a Redis blip is logged and the next pass tries again.
    Meanwhile this process's job counts are written once a second (``metrics.MetricsFlusher``),
    and once more when housekeeping is cancelled at shutdown."""
    store = w.store
    flushing = asyncio.create_task(MetricsFlusher(store.r).run(), name="metrics")
    ticks = 0
    try:
        while True:
            try:
                await store.worker_heartbeat(w.worker_id)
                await requeue_expired_leases(store)
                await resend_overdue(store)
                if ticks % RECOVER_EVERY == 0:
                    await recover_pending(store)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis blips must not kill housekeeping
                log.warning("housekeeping: %s: %s", type(exc).__name__, exc)
            ticks += 1
            await asyncio.sleep(TICK_S)
    finally:
        flushing.cancel()
        await asyncio.gather(flushing, return_exceptions=True)


async def run_poller(services: GatewayServices, plugin: str, poller: Any, plugins: GatewayPlugins) -> None:
    """A channel's poller, run until cancelled; restarted after a failure with doubling backoff."""
    backoff = 1.0
    while True:
        try:
            await poller.run(services)
            backoff = 1.0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            plugins.errors[plugin] += 1
            log.error("poller %s/%s failed: %s: %s; restarting in %.0f s", plugin, poller.name,
                      type(exc).__name__, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(60.0, backoff * 2)


__all__ = ["PENDING_RECOVERY_AFTER_MS", "housekeeping", "recover_pending", "resend_overdue", "run_poller"]
