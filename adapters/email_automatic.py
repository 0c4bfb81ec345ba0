"""Mail no person wrote, as the e-mail channel takes it: auto-replies, out-of-office notices,
bulk mail and bounces (``normalizer.mail_robots`` tells them) never open a complaint or enter a
queue. Each is kept, once, in the quarantine (``GET /v1/quarantine``, raw bytes included) with a
reason that starts ``auto_reply:`` or ``bounce:``, where a supervisor sees it and can discard it.

A bounce of one of our own mails (its Message-ID is ``<reply id@our domain>``, remembered per
reply by the SMTP sender with ``remember_outbound``) marks that reply's delivery ``failed``, with
the bounce's status code (``bounced 5.1.1: …``). A report that is not a failure (``delayed``)
changes nothing.
"""

from __future__ import annotations

import logging

from plugins.kit import GatewayServices, quarantine_once
from normalizer.mail import ParsedMail
from normalizer.mail_robots import BOUNCE, BounceReport
from normalizer.pii import mask_pii

log = logging.getLogger("gateway.email")


async def take_automatic(services: GatewayServices, channel: str, mailbox: str, raw: bytes, parsed: ParsedMail,
                         identity: str) -> str:
    """Keep a robot's mail in the quarantine (once however often it is read again) and apply a
    bounce; answers the kind (``auto_reply`` or ``bounce``)."""
    automatic = parsed.automatic
    assert automatic is not None
    outcome = ""
    if automatic.kind == BOUNCE and automatic.bounce is not None:
        outcome = await apply_bounce(services, channel, automatic.bounce)
    reason = f"{automatic.kind}: {automatic.why}{outcome}; not a complaint (mailbox {mailbox})"
    await quarantine_once(services, channel, reason, raw, identity=identity)  # logs the entry's id and reason
    return automatic.kind


async def apply_bounce(services: GatewayServices, channel: str, report: BounceReport) -> str:
    """Mark each of our replies the bounce returns as failed; answers what was done, for the
    quarantine entry's reason (ids and the status code only)."""
    status = report.status or "no status code"
    if not report.failed:
        return f"; {report.action} ({status}), no delivery changed"
    store = services.store
    error = f"bounced {status}"
    if report.diagnostic:
        error += f": {mask_pii(report.diagnostic)}"
    marked = []
    for original in report.original_ids:
        target = await store.r.get(store.keys.outbound(channel, original))
        if target is None:
            continue  # not one of ours (or older than the outbound record)
        complaint_id, _, reply_id = target.decode().partition("|")
        await store.apply_provider_status(channel, original, "failed", error=error[:300])
        marked.append(f"{reply_id} of {complaint_id}")
        log.warning("e-mail reply %s of %s bounced (%s): delivery marked failed", reply_id, complaint_id, status)
    if not marked:
        return f"; failed ({status}), no reply of ours found in it"
    return f"; failed ({status}), marked failed: {', '.join(marked)}"


__all__ = ["take_automatic", "apply_bounce"]
