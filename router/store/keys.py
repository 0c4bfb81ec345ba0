"""Every Redis key the desk writes, named in one place.

Every key starts with the configured prefix (``GATEWAY_REDIS_PREFIX``, ``cg:`` by default), so a
desk's keys share the prefix's Redis Cluster hash slot when it has a hash tag (``{desk}:``); arq's
job keys (``arq:job:<id>``...) carry that tag in the job id instead. Channel plugins name their
own keys with ``keys.plugin(name, ...)``.

The strings are part of deployed data: an upgrade must find what the last version wrote, so a key
is never renamed here (tests/unit/test_keys.py pins each one).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

from arq.constants import (
    default_queue_name,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

from router.redis_pool import hash_tag

# arq's keys for one job, by its (tagged) id: the job, its in-progress mark, its retry count, its result
ARQ_JOB_PREFIXES = (job_key_prefix, in_progress_key_prefix, retry_key_prefix, result_key_prefix)
_HOLE = "\x00"


def job_key(job_id: str) -> str:
    """arq's key of a job, by the id arq knows it under (hash tag included)."""
    return job_key_prefix + job_id


class Keys:
    """The key layout of one desk (one prefix)."""

    def __init__(self, prefix: str) -> None:
        self.p = prefix
        # arq names a job's keys arq:job:<id>, arq:in-progress:<id>...: a job id that starts with
        # the prefix's hash tag puts them in the desk's Redis Cluster slot with everything else
        self.tag = hash_tag(prefix)
        self.none = prefix + "-"  # never written: stands for an absent key in a script's KEYS
        # intake and jobs
        self.arq_queue = prefix + default_queue_name
        self.wake = prefix + "wake"
        self.pending = prefix + "pending"
        # queues, leases, deadlines
        self.leases = prefix + "leases"
        self.skills = prefix + "skills"
        self.timers = prefix + "timers"
        self.timers_inflight = prefix + "timers:inflight"
        self.escalations = prefix + "escalations"  # deadline events (sla_warning, sla_breached) waiting for listeners, oldest first (router/timers.py)
        self.deadline_policy = prefix + "policy:deadlines"
        self.deadline_policy_history = prefix + "policy:deadlines:history"
        self.clock_offset = prefix + "clock:offset"  # the test clock's shift (GATEWAY_TEST_CLOCK)
        self.agent_skills = prefix + "agents:skills"
        # routing rules (router/rulestore.py)
        self.routing_active = prefix + "routing:active"
        self.routing_seq = prefix + "routing:seq"
        self.routing_history = prefix + "routing:history"
        # the rest of the desk
        self.quarantine = prefix + "quarantine"
        self.workers = prefix + "workers"
        self.intake_load = prefix + "intake:load"  # each gateway process's load, for the workers' pace (router/pacing.py)
        self.outbox = prefix + "outbox"
        self.metrics = prefix + "metrics"
        self.templates = prefix + "templates"
        self.incidents = prefix + "incidents"
        # refunds and compensations (router/cases/outcomes.py): awaiting a supervisor's approval, and
        # rejected back to the agent who proposed them, each by when it got there (ms)
        self.refunds_awaiting = prefix + "refunds:awaiting"
        self.refunds_returned = prefix + "refunds:returned"
        # the categoriser's versions and the desk's corrections (router/understanding)
        self.model_current = prefix + "model:current"  # the promoted version (absent: the default)
        self.model_versions = prefix + "model:versions"  # version -> JSON (manifest figures, evaluation)
        self.model_history = prefix + "model:history"  # JSON per promotion / rollback
        self.model_previous = prefix + "model:previous"  # the versions a rollback returns to
        self.model_artefacts = prefix + "model:artefacts"  # versions whose bytes are stored, by time
        self.model_training = prefix + "model:training"  # held while a candidate trains
        self.model_corrections = prefix + "model:corrections"  # correction id -> JSON
        self.model_corrections_order = prefix + "model:corrections:order"  # correction ids by time

    @staticmethod
    def of(keys_or_prefix: "Keys | str") -> "Keys":
        """``keys_or_prefix`` as Keys (functions that took a prefix take either)."""
        return keys_or_prefix if isinstance(keys_or_prefix, Keys) else _keys_for(keys_or_prefix)

    # -- messages and intake -----------------------------------------------------------------

    def msg(self, mid: str) -> str:
        return f"{self.p}msg:{mid}"

    def raw(self, mid: str) -> str:
        return f"{self.p}raw:{mid}"

    def idem(self, channel: str, scope: str) -> str:
        return f"{self.p}idem:{channel}:{scope}"

    def rate_contact(self, kind: str, value: str, minute: int) -> str:
        """One sender's message count in one minute (intake's rate limit)."""
        return f"{self.p}rate:contact:{kind}:{value}:{minute}"

    def rate_channel(self, channel: str, second: int) -> str:
        """One channel's message count in one second (intake's rate limit)."""
        return f"{self.p}rate:channel:{channel}:{second}"

    def contact_lock(self, contact_label: str) -> str:
        """One message at a time per sender (``kind:value``) in the worker."""
        return f"{self.p}lock:contact:{contact_label}"

    def quarantined_once(self, channel: str, identity: str) -> str:
        """Marks an input as quarantined already, however often it comes again."""
        return f"{self.p}quarantined-once:{channel}:{identity}"

    def quarantined(self, qid: str) -> str:
        return f"{self.p}quarantine:{qid}"

    # -- complaints --------------------------------------------------------------------------

    def complaint(self, cid: str) -> str:
        return f"{self.p}complaint:{cid}"

    def case(self, case_number: str) -> str:
        return f"{self.p}case:{case_number}"

    def case_seq(self, day: str) -> str:
        return f"{self.p}caseseq:{day}"

    def idx(self, field_name: str, value: str) -> str:
        return f"{self.p}idx:{field_name}:{value}"

    @property
    def idx_all(self) -> str:
        return f"{self.p}idx:all"

    def delivery(self, cid: str) -> str:
        return f"{self.p}delivery:{cid}"

    # -- customers ---------------------------------------------------------------------------

    def contact(self, contact: Any) -> str:
        """Which customer a contact (``.kind``, ``.value``) belongs to."""
        return self.contact_label(f"{contact.kind}:{contact.value}")

    def contact_label(self, label: str) -> str:
        """``contact`` by the contact's label, ``kind:value``."""
        return f"{self.p}contact:{label}"

    def open_cases(self, customer_id: str) -> str:
        """The customer's open cases' fingerprints (repeat-report lookup)."""
        return f"{self.p}customer:{customer_id}:open"

    def customer_history(self, customer_id: str) -> str:
        return f"{self.p}customer:{customer_id}:history"

    def customer_contacts(self, customer_id: str) -> str:
        return f"{self.p}customer:{customer_id}:contacts"

    def after_resolved(self, contact: Any) -> str:
        """Which resolved case a contact's next message answers (survey score or reopening)."""
        return self.after_resolved_label(f"{contact.kind}:{contact.value}")

    def after_resolved_label(self, contact_label: str) -> str:
        """``after_resolved`` by the contact's label, ``kind:value`` (as a message record holds it)."""
        return f"{self.p}after:{contact_label}"

    # -- skill queues and leases -------------------------------------------------------------

    def queue(self, skill: str) -> str:
        return f"{self.p}queue:{skill}"

    def queue_age(self, skill: str) -> str:
        return f"{self.p}queueage:{skill}"

    def lease(self, cid: str) -> str:
        return f"{self.p}lease:{cid}"

    def fr_due(self, skill: str) -> str:
        return f"{self.p}frdue:{skill}"

    # -- replies -----------------------------------------------------------------------------

    def outbound(self, channel: str, provider_id: str) -> str:
        return f"{self.p}outbound:{channel}:{provider_id}"

    def outbound_by_contact(self, channel: str, contact_value: str) -> str:
        return f"{self.p}outbound-to:{channel}:{contact_value}"

    def last_inbound(self, channel: str, contact_value: str) -> str:
        return f"{self.p}lastin:{channel}:{contact_value}"

    # -- routing rules, incidents, the model, metrics ---------------------------------------------------

    def routing_version(self, version: int | str) -> str:
        return f"{self.p}routing:version:{version}"

    def incident(self, iid: str) -> str:
        return f"{self.p}incident:{iid}"

    def incident_complaints(self, iid: str) -> str:
        return f"{self.p}incident:{iid}:complaints"

    def incidents_open(self, category: str) -> str:
        return f"{self.p}incidents:open:{category}"

    def incident_recent(self, category: str) -> str:
        """A category's recent complaints by time (the ones a new complaint is compared with)."""
        return f"{self.p}inc:recent:{category}"

    def incident_texts(self, category: str) -> str:
        """A category's recent complaints' customer and tokens."""
        return f"{self.p}inc:text:{category}"

    def incident_notes(self, category: str) -> str:
        """A category's window notes (hash), as versions before the texts hash held the last note's
        number (``n``; now ``scripts.SEQ_FIELD`` of ``incident_texts``, with the latest sweep's
        start): read once, so that a category's note numbers go on from there."""
        return f"{self.p}inc:notes:{category}"

    def incident_lock(self, category: str) -> str:
        return f"{self.p}inc:lock:{category}"

    def model_artefact(self, version: str) -> str:
        """A categoriser version's bytes, manifest and checksum."""
        return f"{self.p}model:artefact:{version}"

    def imap_synced(self, mailbox_label: str) -> str:
        """When a mailbox was last in sync (``*``: the SCAN pattern of all of them)."""
        return f"{self.p}metrics:imap_synced:{mailbox_label}"

    # -- channels' own keys ------------------------------------------------------------------

    def plugin(self, name: str, *parts: str | int) -> str:
        """A channel plugin's own key: ``<prefix><name>:<part>:<part>...`` (``sms:optout:<number>``,
        ``imap:state:<mailbox>``). ``name`` is the plugin's, so plugins never meet each other's keys."""
        return self.p + ":".join([name, *(str(part) for part in parts)])

    # -- arq's keys --------------------------------------------------------------------------

    def job_id(self, job_id: str) -> str:
        """The id arq knows a job under: ours, behind the prefix's hash tag."""
        return self.tag + job_id

    @staticmethod
    def arq_job(job_id: str) -> str:
        return job_key_prefix + job_id

    @staticmethod
    def arq_in_progress(job_id: str) -> str:
        return in_progress_key_prefix + job_id

    @staticmethod
    def arq_retry(job_id: str) -> str:
        return retry_key_prefix + job_id

    @staticmethod
    def arq_result(job_id: str) -> str:
        return result_key_prefix + job_id

    # -- for Lua scripts ---------------------------------------------------------------------

    @staticmethod
    def around(key_of: Callable[[str], str]) -> tuple[str, str]:
        """(head, tail) of a key with one variable part: a Lua script that learns the part only
        as it runs names the key ``head .. part .. tail``."""
        head, hole, tail = key_of(_HOLE).partition(_HOLE)
        if not hole:
            raise ValueError("the key has no variable part")
        return head, tail

    @staticmethod
    def head(key_of: Callable[[str], str]) -> str:
        """The part before the variable end of a key (``<prefix>lease:`` of ``lease(cid)``)."""
        head, tail = Keys.around(key_of)
        if tail:
            raise ValueError("the key goes on after its variable part")
        return head


@lru_cache(maxsize=64)
def _keys_for(prefix: str) -> Keys:
    return Keys(prefix)


__all__ = ["ARQ_JOB_PREFIXES", "Keys", "job_key"]
