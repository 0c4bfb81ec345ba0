"""Every state change of a complaint, written once and used by the HTTP handlers and the worker's jobs.

Each change runs inside ``ComplaintStore.update`` (under the complaint's optimistic lock) and
plans, in ``TxEffects``, the Redis writes and jobs that commit with it (a reply's outbox entry
and send job, timers, queue moves, listener events). The async functions load what they need,
apply the change and answer the complaint as it now stands; the plain ones are steps of a change.

A customer's message (``opening``, ``customer_messages``; called by ``router.pipeline``):

- ``draft_complaint`` / ``open_complaint``: a new case, acknowledged;
- ``follow_up``: a further message on an open case (a paused clock runs again);
- ``merge_repeat``: a repeat report joins the open case it repeats (priority up, maybe re-routed);
- ``survey_or_reopen``: after resolution, a score answers the survey, anything else reopens;
- ``status_answered``: a status question answered and noted on the case.

The desk (``answers``, ``staff``; called by ``gateway.api`` and ``gateway.api_people``):

- ``reply``: an agent's answer; ``answer``: any answer (the one ``first_response`` step);
- ``answer_incident``: a supervisor's answer to every case of an incident;
  ``answer_joined``: a case that joined an incident already answered gets the answer (the
  incident check; the joining itself is the incident's: ``Incidents.decide``);
- ``claim`` / ``claim_most_urgent``: a case leased to an agent; ``requeue_expired_leases``: a
  lease that ran out (housekeeping);
- ``resolve``: the outcome, the survey, the reopen window; ``split``: a merge undone;
- ``correct_category``: an agent's correction, kept as a labelled example, the case re-routed;
  ``merge_case``: a case merged into the one it repeats (``corrections``).

The categoriser's part of a new case (``opening``): ``categorised_as`` (confidence, runner-up),
``link_possible_repeat`` (a middle-band repeat match, linked for an agent to merge).

The appeal process:

- ``progress``: ``announce`` (a state change told to the customer: taken, awaiting approval,
  decided), the periodic update while a case is open, the no-spam gap and the quiet hours;
- ``materials``: ``request_materials`` (an agent asks; the resolution clock pauses),
  ``take_evidence`` (what arrives on any channel ticks items off), ``mark_material`` (by hand),
  reminders; the clock runs again once nothing is awaited.

Both register their timers' fire steps with ``router.timers`` when imported (here).

- ``outcomes``: a refund or compensation proposed at ``resolve`` (approved by the policy at or
  below its threshold, else waiting: ``settle``), ``approve`` / ``reject`` (a supervisor's
  decision, never on their own proposal), ``correct_root_cause``.

The console's actions on a held case (``leases``: ``extend_lease``, ``release_lease`` — released
or handed back with a reason) and a reopening by the desk (``reopening``: ``reopen_case``, the same
change a customer's message makes after resolution).

Reply ids come from ``replies`` (``new_reply_id``, ``reply_id_for``).
"""

from __future__ import annotations

from router.cases.answers import (
    answer,
    answer_incident,
    answer_joined,
    escalation_queues,
    first_response,
    give_incident_answer,
    leave_queues,
    reply,
)
from router.cases.corrections import MergeRefused, correct_category, merge_case
from router.cases.materials import MaterialsError, take_evidence
from router.cases.materials import mark as mark_material
from router.cases.materials import request as request_materials
from router.cases.customer_messages import (
    after_key,
    entry,
    follow_up,
    join_as_repeat,
    merge_repeat,
    status_answered,
    status_reply_id,
    survey_or_reopen,
    taken_into,
)
from router.cases.opening import (
    Opened,
    categorised_as,
    draft_complaint,
    link_possible_repeat,
    open_complaint,
)
from router.cases.progress import announce
from router.cases.replies import new_reply_id, notice, queue_reply, reply_id_for
from router.cases.staff import Claimed, claim, claim_most_urgent, requeue_expired_leases, resolve, split

__all__ = [
    "Claimed",
    "MaterialsError",
    "MergeRefused",
    "Opened",
    "after_key",
    "announce",
    "answer",
    "answer_incident",
    "answer_joined",
    "categorised_as",
    "claim",
    "claim_most_urgent",
    "correct_category",
    "draft_complaint",
    "entry",
    "escalation_queues",
    "first_response",
    "follow_up",
    "give_incident_answer",
    "join_as_repeat",
    "leave_queues",
    "link_possible_repeat",
    "mark_material",
    "merge_case",
    "merge_repeat",
    "new_reply_id",
    "notice",
    "open_complaint",
    "queue_reply",
    "reply",
    "reply_id_for",
    "request_materials",
    "requeue_expired_leases",
    "resolve",
    "split",
    "status_answered",
    "status_reply_id",
    "survey_or_reopen",
    "take_evidence",
    "taken_into",
]
