"""Replies to the customer: their ids, and queuing one for sending with the change that makes it.

Every reply id is built here. An id is either fresh (``new_reply_id``: an agent's answer, a
notice) or fixed by what caused it (``reply_id_for``: a message's acknowledgement, an incident's
answer on one case), so a step that runs twice finds the reply it made the first time.
"""

from __future__ import annotations

from datetime import datetime, timezone

from normalizer.ids import new_id
from normalizer.schema import Complaint, InboundMessage, Reply
from router import templates
from router.jobs import send_job
from router.store import ComplaintStore, TxEffects


def new_reply_id() -> str:
    """A fresh, time-ordered id for a reply nobody can send twice by mistake (an agent's)."""
    return new_id("rep")


def reply_id_for(owner_id: str, what: str) -> str:
    """A reply id fixed by what caused it (``cmp_X`` + ``inc_Y`` → ``rep_X_inc_Y``), so a step
    that runs twice finds the reply it made the first time instead of making a second one."""
    return f"rep_{owner_id.split('_', 1)[-1]}_{what}"


def queue_reply(store: ComplaintStore, complaint: Complaint, effects: TxEffects, reply: Reply) -> Reply:
    """Put a reply on the case and in the outbox, with its send job, in the change's transaction
    (if this process dies before sending, housekeeping's outbox pass sends it)."""
    complaint.replies.append(reply)
    complaint.last_update_at = reply.created_at  # progress updates count the silence from here
    effects.ops.append(lambda pipe: store.add_to_outbox(pipe, complaint.id, reply.id))
    effects.jobs.append(send_job(complaint.id, reply.id))
    return reply


def notice(store: ComplaintStore, complaint: Complaint, effects: TxEffects, name: str,
           message: InboundMessage | None = None, reason: str = "", *, kind: str | None = None,
           reply_id: str | None = None, **fields: str) -> Reply:
    """A templated notice (``router.templates``: an outcome, the survey, survey thanks, reopened,
    a progress update, a materials request): in the language and on the channel of the message
    it answers, else the case's. ``kind``: the reply's kind (``notice``; ``survey`` for the
    survey); ``reply_id``: a fixed id, so a step that runs twice finds it; ``fields``: the
    template's named placeholders."""
    language = message.language if message is not None else complaint.language
    to = message.sender if message is not None and message.sender != complaint.contact else None
    return queue_reply(store, complaint, effects, Reply(
        id=reply_id or reply_id_for(new_id("r"), name),
        kind=kind or ("survey" if name == "survey" else "notice"),
        text=templates.render(name, language, complaint.case_number, reason, **fields), author="system",
        channel=message.channel if message is not None else complaint.channel,
        created_at=datetime.now(timezone.utc), to=to, language=language))


__all__ = ["new_reply_id", "notice", "queue_reply", "reply_id_for"]
