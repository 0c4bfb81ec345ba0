"""``consider_incident``: the job that links a new complaint to an incident (many customers, one
fault) when it joins or forms one. Queued in the commit that opens the complaint
(``router.cases.incident_job``)."""

from __future__ import annotations

import logging
from typing import Any

from arq import Retry

from router import cases
from router.context import context_of, job_try
from router.incidents import Incidents
from router.redis_pool import redis_unavailable
from router.store import NotFound

log = logging.getLogger("gateway.worker")


async def consider_incident(ctx: dict[str, Any], complaint_id: str, message_id: str) -> str:
    """Many customers, one fault: link the new complaint to an incident when it joins or forms one.
    A job of its own, so Redis being briefly away (a failover, a restart) retries it with backoff
    instead of skipping it for good; every step is safe to run again."""
    w = context_of(ctx)
    settings, store = w.settings, w.store
    incidents = Incidents(store, settings.incident_window_minutes, settings.incident_min_customers)
    try:
        try:
            complaint = await store.get(complaint_id)
        except NotFound:
            return "missing"
        text = next((m.text for m in complaint.messages if m.message_id == message_id), "")
        iid, linked = await incidents.consider(complaint.id, complaint.customer_id, complaint.category, text)
        if not iid:
            return "none"
        incident = await incidents.get(iid)
        for cid in linked:
            await cases.link_to_incident(store, cid, incident or {"id": iid})
        log.info("incident %s: %d complaint(s) linked", iid, len(linked))
        return "linked"
    except Exception as exc:
        if not redis_unavailable(exc):
            raise
        defer = min(60, 2 ** job_try(ctx))
        log.warning("incident check of %s: redis unavailable (%s); again in %d s", complaint_id,
                    type(exc).__name__, defer)
        raise Retry(defer=defer) from None


__all__ = ["consider_incident"]
