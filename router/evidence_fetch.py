"""Attachments a channel only announced (MMS media, a call recording, a WhatsApp / Messenger
image, a Telegram photo, a WeChat image) are fetched by a job of their own, never in the way of
the customer's words.

The complaint opens at once with the message's text; each announced attachment is on it as
evidence in state ``pending`` (an id fixed by the message and the attachment's place in it, so a
re-run of the message's job names it the same). ``fetch_evidence`` (one arq job per complaint and
attachment, its id fixed by both) asks the channel's plugin for the bytes and stores them:

- fetched and accepted by the blob store: ``stored`` (the content-addressed hash, the sniffed
  type and size; the provider's URL is dropped);
- refused by the blob store (too large, a type not taken as evidence): ``failed`` at once, with
  the reason; retrying would fetch the same bytes;
- the plugin answers ``None`` (the provider says the media is gone, or no plugin serves the
  channel): ``failed`` at once;
- the plugin raises or outlasts its time (host refuses, 5xx, stalls): the try is counted on the
  evidence with its error (still ``pending``, so the agent sees it is being tried) and the job is
  retried after 1, 2, 4 ... s (capped); after the last allowed try it is ``failed`` with the
  last error.

Every change goes through ``store.update`` and only ever moves a ``pending`` item, so repeats of
the job (arq runs a job at least once) change nothing twice.

Settings (with these defaults until the deployment's settings carry them):
``evidence_fetch_tries`` (GATEWAY_EVIDENCE_FETCH_TRIES, 10), ``evidence_fetch_backoff_seconds``
(GATEWAY_EVIDENCE_FETCH_BACKOFF_SECONDS, 1: the first delay, doubling up to 300 s) and
``evidence_fetch_timeout_seconds`` (GATEWAY_EVIDENCE_FETCH_TIMEOUT_SECONDS, 30: one try as a
whole, kept under the job timeout).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from arq import Retry
from msgspec.structs import replace

from router.context import context_of
from router.store import ComplaintStore, Conflict, NotFound, PlannedJob, TxEffects
from normalizer.evidence import EvidenceRejected
from normalizer.pii import mask_text
from normalizer.schema import (
    EVIDENCE_FAILED,
    EVIDENCE_PENDING,
    EVIDENCE_STORED,
    Complaint,
    EvidenceLink,
    HistoryEvent,
    InboundMessage,
)

log = logging.getLogger("gateway.evidence")

JOB = "fetch_evidence"
MAX_BACKOFF_S = 300.0
#: Seconds kept between the end of one try and the job's own timeout (to record the outcome).
JOB_TIMEOUT_MARGIN_S = 5.0
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


@dataclass(frozen=True)
class FetchPolicy:
    """How often and how patiently an attachment is fetched."""

    tries: int = 10
    first_backoff_s: float = 1.0
    try_timeout_s: float = 30.0

    @classmethod
    def of(cls, settings: Any) -> "FetchPolicy":
        tries = int(getattr(settings, "evidence_fetch_tries", cls.tries))
        backoff = float(getattr(settings, "evidence_fetch_backoff_seconds", cls.first_backoff_s))
        timeout = float(getattr(settings, "evidence_fetch_timeout_seconds", cls.try_timeout_s))
        job_timeout = getattr(settings, "job_timeout_seconds", None)
        if job_timeout:
            timeout = min(timeout, job_timeout - JOB_TIMEOUT_MARGIN_S)
        return cls(tries=max(1, tries), first_backoff_s=max(0.0, backoff), try_timeout_s=max(1.0, timeout))

    def delay(self, failed_tries: int) -> float:
        """The wait after the ``failed_tries``-th failed try: 1, 2, 4 ... times the first backoff."""
        return min(MAX_BACKOFF_S, self.first_backoff_s * 2 ** (failed_tries - 1))


def arq_max_tries(settings: Any) -> int:
    """arq's own bound for the job: above the policy's tries, since arq also counts the runs a
    Redis blip or a worker's death cost (the policy's count lives on the evidence itself)."""
    return FetchPolicy.of(settings).tries * 2 + 5


def evidence_id(message_id: str, n: int) -> str:
    return f"ev_{message_id.split('_', 1)[-1]}_{n}"


def is_pending(link: EvidenceLink) -> bool:
    return link.state == EVIDENCE_PENDING


def announce(message: InboundMessage) -> list[EvidenceLink]:
    """The message's attachments as the complaint keeps them: each one the channel only announced
    (a ``remote_url``, no bytes yet) becomes ``pending`` under an id of its own; the rest as
    they are. Deterministic, so a re-run of the message's job builds the same evidence."""
    kept = []
    for n, link in enumerate(message.attachments):
        if link.remote_url and not link.sha256 and link.state != EVIDENCE_FAILED:
            link = replace(link, id=evidence_id(message.id, n), state=EVIDENCE_PENDING)
        kept.append(link)
    return kept


def fetch_jobs(complaint_id: str, channel: str, links: Iterable[EvidenceLink]) -> list[PlannedJob]:
    """One fetch job per pending attachment (the message's ``channel`` serves it)."""
    return [PlannedJob(JOB, f"evidence:{complaint_id}:{link.id}", (complaint_id, link.id, channel))
            for link in links if is_pending(link)]


def evidence_jobs(complaint: Complaint) -> list[PlannedJob]:
    """The fetch jobs a new complaint's pending evidence needs (committed with the complaint)."""
    return fetch_jobs(complaint.id, complaint.channel, complaint.evidence)


def reason_of(exc: BaseException) -> str:
    """An error as the agent sees it: its kind and text, URLs (which may carry a token) and
    personal data left out."""
    if isinstance(exc, TimeoutError):
        text = "no answer in time"
    else:
        text = _URL.sub("<url>", str(exc))
    return mask_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


async def fetch_evidence(ctx: dict[str, Any], complaint_id: str, evidence_id: str, channel: str) -> str:
    """Fetch one pending attachment of a complaint (see the module's description)."""
    w = context_of(ctx)
    store = w.store
    policy = FetchPolicy.of(w.settings)
    try:
        complaint = await store.get(complaint_id)
    except NotFound:
        return "missing"
    link = next((e for e in complaint.evidence if e.id == evidence_id), None)
    if link is None or not is_pending(link):
        return "already"
    tries = link.tries + 1
    try:
        async with asyncio.timeout(policy.try_timeout_s):
            fetched = await w.plugins.fetch_evidence(link, channel, w.services)
    except Exception as exc:  # the host refused, answered 5xx, stalled: try again later
        reason = reason_of(exc)
        if tries >= policy.tries:
            log.warning("evidence %s of %s: given up after %d tries (%s)", evidence_id, complaint_id, tries, reason)
            return await _settle(store, complaint_id, evidence_id, EVIDENCE_FAILED, tries=tries, error=reason)
        delay = policy.delay(tries)
        log.info("evidence %s of %s: try %d failed (%s); next in %.0f s", evidence_id, complaint_id, tries, reason,
                 delay)
        await _settle(store, complaint_id, evidence_id, EVIDENCE_PENDING, tries=tries, error=reason)
        raise Retry(defer=delay) from None
    if fetched is None:
        return await _settle(store, complaint_id, evidence_id, EVIDENCE_FAILED, tries=tries,
                             error=f"not available: the {channel} provider no longer has it, "
                                   "or no plugin fetches for this channel")
    data, content_type = fetched
    try:
        stored = await w.services.blobs.put(data, content_type, filename=link.filename, source=link.source)
    except EvidenceRejected as exc:
        log.info("evidence %s of %s refused: %s", evidence_id, complaint_id, exc.code)
        return await _settle(store, complaint_id, evidence_id, EVIDENCE_FAILED, tries=tries,
                             error=f"{exc.code}: {exc}")
    return await _settle(store, complaint_id, evidence_id, EVIDENCE_STORED, tries=tries, stored=stored)


async def _settle(store: ComplaintStore, complaint_id: str, evidence_id: str, state: str, *, tries: int,
                  error: str | None = None, stored: EvidenceLink | None = None) -> str:
    """Write the outcome of a try onto the evidence item, if it is still pending (else nothing)."""
    now = datetime.now(timezone.utc)

    def change(complaint: Complaint, effects: TxEffects) -> None:
        n, link = next(((n, e) for n, e in enumerate(complaint.evidence) if e.id == evidence_id), (-1, None))
        if link is None or not is_pending(link) or (state == EVIDENCE_PENDING and link.tries >= tries):
            raise Conflict("evidence_settled", evidence_id)  # done already, or this try counted already
        if stored is not None:
            complaint.evidence[n] = replace(link, sha256=stored.sha256, content_type=stored.content_type,
                                            size=stored.size, filename=stored.filename, remote_url=None,
                                            state=EVIDENCE_STORED, error=None, tries=tries)
        else:
            complaint.evidence[n] = replace(link, state=state, error=error, tries=tries)
        if state != EVIDENCE_PENDING:
            detail = {"evidence_id": evidence_id, "tries": str(tries)}
            if error:
                detail["reason"] = error
            complaint.history.append(HistoryEvent(at=now, actor="worker", action=f"evidence_{state}", detail=detail))

    try:
        await store.update(complaint_id, change)
    except (Conflict, NotFound):
        return "already"
    return state


__all__ = ["FetchPolicy", "announce", "arq_max_tries", "evidence_jobs", "fetch_evidence", "fetch_jobs"]
