"""A case checked against the payment records (核实支付记录): what an enricher's ``payment_check``
answer does to the case, and the job that asks again when the records system was away.

An enricher plugin (built in: ``adapters.payment_records``) answers ``enrich_complaint`` with a
``payment_check`` mapping in the shape of ``normalizer.schema.PaymentCheck`` (state, charge,
duplicates, duplicate_confirmed, amount_mismatch, claimed_amount, error) and, when the records
system did not answer, ``retry_after_seconds``. ``record`` writes it on the case, the same way for
the first lookup (on the draft, before it is routed) and for every later one (``payment_lookup``):

- ``found``: the charge and its look-alike charges on ``payment_check``; a "charged twice"
  complaint the records confirm is tagged ``duplicate_charge_confirmed`` and raised in priority
  (by ``DUPLICATE_PRIORITY_BOOST``; a case already waiting in its queue moves up in it); an amount
  that differs from what the customer states is tagged ``amount_mismatch`` (both amounts shown);
- ``not_found``: recorded as such, tagged ``payment_not_found``;
- ``retrying``: the failed try is in the history with its reason, and the next try is a job of its
  own (id fixed by the case, the plugin and the try), committed with it, due after the plugin's
  backoff; never more than ``MAX_TRIES`` in all, whatever a plugin asks;
- ``failed``: given up (or refused), with the reason, tagged ``payment_lookup_failed``; also when
  the case was resolved before a later try was due (no lookup is made for a closed case).

Every try is written only over the try before it (a ``retrying`` check with one try less), so a
job that runs twice changes nothing twice, and the case never waits for the records system.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
from arq import Retry

from normalizer.schema import (
    PAYMENT_CHECK_STATES,
    Complaint,
    HistoryEvent,
    InboundMessage,
    PaymentCheck,
)
from plugins.manager import GatewayPlugins
from router import routing
from router.context import context_of, job_try
from router.jobs import PAYMENT_LOOKUP, payment_lookup_job
from router.store import Conflict, NotFound, PlannedJob, TxEffects, is_open

log = logging.getLogger("gateway.worker")

JOB = PAYMENT_LOOKUP
DUPLICATE_PRIORITY_BOOST = 2
#: Lookups of one case in all, whatever a plugin's own setting asks.
MAX_TRIES = 20
#: arq's bound for one try's job: it only re-runs while the case is still being opened, or Redis blinked.
ARQ_MAX_TRIES = 8
TAG_DUPLICATE = "duplicate_charge_confirmed"
TAG_MISMATCH = "amount_mismatch"
TAG_NOT_FOUND = "payment_not_found"
TAG_FAILED = "payment_lookup_failed"


class Lookup(msgspec.Struct, kw_only=True):
    """One enricher's answer about the payment records."""

    check: PaymentCheck
    retry_after_s: float | None = None


def lookup_of(plugin_name: str, answer: dict[str, Any], previous: PaymentCheck | None, now: datetime) -> Lookup:
    """The ``payment_check`` of a plugin's answer as the case keeps it; raises ``ValueError`` /
    ``TypeError`` when it is not in the documented shape (counted as the plugin's error)."""
    raw = answer["payment_check"]
    if not isinstance(raw, dict):
        raise TypeError("payment_check must be a mapping")
    fields = {k: v for k, v in raw.items() if k not in ("source", "checked_at", "tries", "next_try_at")}
    try:
        check = msgspec.convert({**fields, "source": plugin_name, "checked_at": now}, PaymentCheck)
    except msgspec.ValidationError as exc:
        raise ValueError(f"payment_check: {exc}") from None
    if check.state not in PAYMENT_CHECK_STATES:
        raise ValueError(f"payment_check.state must be one of {', '.join(PAYMENT_CHECK_STATES)}")
    check.found = check.state == "found" and check.charge is not None
    if check.state == "found" and check.charge is None:
        raise ValueError("payment_check: state found without a charge")
    retrying_before = previous is not None and previous.state == "retrying" and previous.source == plugin_name
    check.tries = previous.tries + 1 if retrying_before and previous is not None else 1
    if check.error:
        check.error = check.error[:300]
    retry_after = answer.get("retry_after_seconds")
    if check.state == "retrying":
        if retry_after is None:
            raise ValueError("payment_check: state retrying without retry_after_seconds")
        return Lookup(check=check, retry_after_s=max(0.0, float(retry_after)))
    return Lookup(check=check)


def record(complaint: Complaint, plugin_name: str, lookup: Lookup, now: datetime) -> PlannedJob | None:
    """Write a lookup on the case (see the module's description); answers the job of the next try,
    if there is one."""
    check = lookup.check
    if check.state == "retrying" and check.tries >= MAX_TRIES:
        check.state = "failed"
        check.error = f"gave up after {check.tries} lookups: {check.error or 'no answer'}"[:300]
    actor = f"plugin:{plugin_name}"
    job = None
    if check.state == "retrying":
        delay = lookup.retry_after_s or 0.0
        check.next_try_at = now + timedelta(seconds=delay)
        job = payment_lookup_job(complaint.id, plugin_name, check.tries + 1, delay)
        complaint.history.append(HistoryEvent(at=now, actor=actor, action="payment_lookup_failed", detail={
            "try": str(check.tries), "reason": check.error or "", "next_try_at": check.next_try_at.isoformat()}))
    elif check.state == "failed":
        _tag(complaint, TAG_FAILED)
        complaint.history.append(HistoryEvent(at=now, actor=actor, action="payment_lookup_gave_up", detail={
            "tries": str(check.tries), "reason": check.error or ""}))
    else:
        complaint.history.append(HistoryEvent(at=now, actor=actor, action="payment_checked", detail=_found(check)))
        if check.state == "not_found":
            _tag(complaint, TAG_NOT_FOUND)
        if check.amount_mismatch:
            _tag(complaint, TAG_MISMATCH)
        if check.duplicate_confirmed and _tag(complaint, TAG_DUPLICATE):
            complaint.priority = min(routing.MAX_PRIORITY, complaint.priority + DUPLICATE_PRIORITY_BOOST)
    complaint.payment_check = check
    return job


def _tag(complaint: Complaint, tag: str) -> bool:
    """Add ``tag``; ``False`` when the case had it already (its consequence happened already)."""
    if tag in complaint.tags:
        return False
    complaint.tags.append(tag)
    return True


def _found(check: PaymentCheck) -> dict[str, str]:
    detail = {"state": check.state, "tries": str(check.tries)}
    if check.claimed_amount is not None:
        detail["claimed_amount"] = f"{check.claimed_amount.value} {check.claimed_amount.currency}"
    if check.charge is not None:
        charge = check.charge
        detail.update(transaction_id=charge.transaction_id, charged_amount=f"{charge.amount.value} "
                      f"{charge.amount.currency}", status=charge.status, merchant=charge.merchant or "")
        if charge.charged_at is not None:
            detail["charged_at"] = charge.charged_at.isoformat()
    if check.duplicates:
        detail["duplicates"] = ",".join(d.transaction_id for d in check.duplicates)[:200]
    detail["duplicate_confirmed"] = str(check.duplicate_confirmed).lower()
    detail["amount_mismatch"] = str(check.amount_mismatch).lower()
    return detail


def opening_message(complaint: Complaint) -> InboundMessage:
    """The message that opened the case, as an enricher asked again later sees it (rebuilt from
    the case: the stored message may have expired)."""
    first = complaint.messages[0] if complaint.messages else None
    return InboundMessage(
        id=first.message_id if first else complaint.id, channel=complaint.channel, sender=complaint.contact,
        text=first.text if first else "", language=first.language if first else complaint.language,
        received_at=first.received_at if first else complaint.created_at, subject=first.subject if first else None,
        transaction_id=complaint.transaction_id, amount=complaint.amount)


async def ask_again(plugins: GatewayPlugins, complaint: Complaint, plugin_name: str, now: datetime) -> Lookup:
    """The plugin's answer now; no usable answer (it was switched off, or failed) counts as given up."""
    reason = "the plugin gave no answer"
    for name, answer in await plugins.enrich(complaint, opening_message(complaint), only=plugin_name):
        if isinstance(answer, dict) and "payment_check" in answer:
            try:
                return lookup_of(name, answer, complaint.payment_check, now)
            except (KeyError, TypeError, ValueError) as exc:
                plugins.errors[name] += 1
                log.error("plugin %s returned an unusable payment_check: %s", name, exc)
                reason = "the plugin's answer was not in the documented shape"
    tries = complaint.payment_check.tries + 1 if complaint.payment_check is not None else 1
    return Lookup(check=PaymentCheck(source=plugin_name, checked_at=now, state="failed", tries=tries,
                                     claimed_amount=complaint.amount, error=reason))


async def payment_lookup(ctx: dict[str, Any], complaint_id: str, plugin_name: str, attempt: int) -> str:
    """The ``attempt``-th lookup of a case's payment records by ``plugin_name``, due because the
    try before it found the records system away (see the module's description)."""
    w = context_of(ctx)
    store = w.store
    try:
        complaint = await store.get(complaint_id)
    except NotFound:
        if job_try(ctx) < ARQ_MAX_TRIES - 1:
            raise Retry(defer=2) from None  # queued just before its case's commit: the case is on its way
        return "missing"
    if not _due(complaint, plugin_name, attempt):
        return "already"
    now = datetime.now(timezone.utc)
    if is_open(complaint):
        lookup = await ask_again(w.plugins, complaint, plugin_name, now)
    else:  # resolved meanwhile: nothing left to decide with the records; say so rather than wait on
        lookup = Lookup(check=PaymentCheck(source=plugin_name, checked_at=now, state="failed",
                                           claimed_amount=complaint.amount,
                                           error="the case was closed before the payment records answered"))

    def change(current: Complaint, effects: TxEffects) -> None:
        if not _due(current, plugin_name, attempt):
            raise Conflict("payment_check_settled", complaint_id)  # this try was recorded already
        lookup.check.tries = attempt if is_open(complaint) else attempt - 1
        job = record(current, plugin_name, lookup, datetime.now(timezone.utc))  # a raised priority re-ranks
        if job is not None:                                                      # its queue in store.update
            effects.jobs.append(job)

    try:
        await store.update(complaint_id, change)
    except (Conflict, NotFound):
        return "already"
    log.info("payment lookup %d of %s by %s: %s", attempt, complaint_id, plugin_name, lookup.check.state)
    return lookup.check.state


def _due(complaint: Complaint, plugin_name: str, attempt: int) -> bool:
    check = complaint.payment_check
    return (check is not None and check.state == "retrying" and check.source == plugin_name
            and check.tries == attempt - 1)


__all__ = ["ARQ_MAX_TRIES", "DUPLICATE_PRIORITY_BOOST", "JOB", "Lookup", "MAX_TRIES", "TAG_DUPLICATE", "TAG_FAILED",
           "TAG_MISMATCH", "TAG_NOT_FOUND", "lookup_of", "opening_message", "payment_lookup", "record"]
