"""The incident check of a new complaint (many customers, one fault): linked to an incident when
it joins or forms one.

The commit that opens the complaint notes it in its category's window (``router.cases.
open_complaint``); the pipeline decides at once, after the acknowledgement (``check_opened``).
If Redis is away for that, the message's job is retried, and its retry — finding the message
processed — runs the whole check again (``check_again``: note, decide; every step safe to run
twice). Joining or forming an incident links its complaints in the same step (the link is kept
beside each complaint); only when the incident's answer was given already does each newly linked
complaint get that answer here (``cases.answer_joined``). ``consider_incident`` is the same
check as a job of its own (still run for jobs queued by earlier versions).
"""

from __future__ import annotations

import logging
from typing import Any

from arq import Retry

from router import cases
from router.cases.opening import Opened
from router.incidents import Decision
from normalizer.ids import dt_to_ms
from router.context import WorkerContext, context_of, job_try
from router.redis_pool import redis_unavailable
from router.store import NotFound

log = logging.getLogger("gateway.worker")


async def check_opened(w: WorkerContext, opened: Opened) -> str:
    """Decide on a complaint its commit just noted in the incident window."""
    if not opened.incident_tokens:
        return "none"
    c = opened.complaint
    text = c.messages[0].text if c.messages else ""
    return await _answer(w, await w.incidents.decide(c.id, c.customer_id, c.category, text, opened.incident_tokens,
                                                     opened.noted_at, opened.incident_window))


async def check_again(w: WorkerContext, complaint_id: str, message_id: str) -> str:
    """The whole check for a complaint (noted again: safe when it was noted already)."""
    try:
        complaint = await w.store.get(complaint_id)
    except NotFound:
        return "missing"
    text = next((m.text for m in complaint.messages if m.message_id == message_id), "")
    return await _answer(w, await w.incidents.consider(complaint.id, complaint.customer_id, complaint.category,
                                                       text, dt_to_ms(complaint.created_at)))


async def _answer(w: WorkerContext, decision: Decision) -> str:
    """After a complaint joined or formed an incident (its complaints linked already): the
    incident's answer, if given, to each of them."""
    if not decision.incident_id:
        return "none"
    if decision.answered:
        for cid in decision.linked:
            await cases.answer_joined(w.store, cid, decision.answered)
    log.info("incident %s: %d complaint(s) linked", decision.incident_id, len(decision.linked))
    return "linked"


async def consider_incident(ctx: dict[str, Any], complaint_id: str, message_id: str) -> str:
    """The check as a job of its own: Redis briefly away (a failover, a restart) retries it with
    backoff instead of skipping it for good."""
    try:
        return await check_again(context_of(ctx), complaint_id, message_id)
    except Exception as exc:
        if not redis_unavailable(exc):
            raise
        defer = min(60, 2 ** job_try(ctx))
        log.warning("incident check of %s: redis unavailable (%s); again in %d s", complaint_id,
                    type(exc).__name__, defer)
        raise Retry(defer=defer) from None


__all__ = ["check_again", "check_opened", "consider_incident"]
