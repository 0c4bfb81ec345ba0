"""Every key the desk writes is named by ``Keys`` (router/store/keys.py), and each name stays what
deployed Redis data was written under: the strings below are written out literally, never built
from the code under test. Nothing else builds a key from the prefix by hand."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from redis.crc import key_slot

from router.store import Keys, job_key

ROOT = Path(__file__).resolve().parents[2]
CONTACT = SimpleNamespace(kind="phone", value="+8613800000000")


def named(k: Keys) -> dict[str, str]:
    """Each key the desk writes, as Keys names it (the dict's key says how it was asked for)."""
    return {
        "arq_queue": k.arq_queue,
        "wake": k.wake,
        "pending": k.pending,
        "leases": k.leases,
        "skills": k.skills,
        "timers": k.timers,
        "timers_inflight": k.timers_inflight,
        "escalations": k.escalations,
        "deadline_policy": k.deadline_policy,
        "deadline_policy_history": k.deadline_policy_history,
        "clock_offset": k.clock_offset,
        "agent_skills": k.agent_skills,
        "routing_active": k.routing_active,
        "routing_seq": k.routing_seq,
        "routing_history": k.routing_history,
        "quarantine": k.quarantine,
        "workers": k.workers,
        "intake_load": k.intake_load,
        "outbox": k.outbox,
        "metrics": k.metrics,
        "templates": k.templates,
        "incidents": k.incidents,
        "refunds_awaiting": k.refunds_awaiting,
        "refunds_returned": k.refunds_returned,
        "model_current": k.model_current,
        "model_versions": k.model_versions,
        "model_history": k.model_history,
        "model_previous": k.model_previous,
        "model_artefacts": k.model_artefacts,
        "model_training": k.model_training,
        "model_corrections": k.model_corrections,
        "model_corrections_order": k.model_corrections_order,
        "model_artefact": k.model_artefact("v3"),
        "none": k.none,
        "msg": k.msg("msg_1"),
        "raw": k.raw("msg_1"),
        "idem": k.idem("app", "app:c-1"),
        "rate_contact": k.rate_contact("phone", "+8613800000000", 29_000_000),
        "rate_channel": k.rate_channel("sms", 1_740_000_000),
        "contact_lock": k.contact_lock("phone:+8613800000000"),
        "quarantined_once": k.quarantined_once("email", "abc123"),
        "quarantined": k.quarantined("q_1"),
        "complaint": k.complaint("cmp_1"),
        "case": k.case("C-20260101-000001"),
        "case_seq": k.case_seq("20260101"),
        "idx": k.idx("status", "new"),
        "idx_all": k.idx_all,
        "delivery": k.delivery("cmp_1"),
        "contact": k.contact(CONTACT),
        "contact_label": k.contact_label("phone:+8613800000000"),
        "open_cases": k.open_cases("cus_1"),
        "customer_history": k.customer_history("cus_1"),
        "customer_contacts": k.customer_contacts("cus_1"),
        "after_resolved": k.after_resolved(CONTACT),
        "queue": k.queue("cards"),
        "queue_age": k.queue_age("cards"),
        "lease": k.lease("cmp_1"),
        "fr_due": k.fr_due("cards"),
        "outbound": k.outbound("sms", "SM1"),
        "outbound_by_contact": k.outbound_by_contact("messenger", "psid-1"),
        "last_inbound": k.last_inbound("whatsapp", "+8613800000000"),
        "routing_version": k.routing_version(3),
        "incident": k.incident("inc_1"),
        "incident_complaints": k.incident_complaints("inc_1"),
        "incidents_open": k.incidents_open("app_fault"),
        "incident_recent": k.incident_recent("app_fault"),
        "incident_texts": k.incident_texts("app_fault"),
        "incident_notes": k.incident_notes("app_fault"),
        "incident_lock": k.incident_lock("app_fault"),
        "imap_synced": k.imap_synced("support"),
        "sms_optout": k.plugin("sms", "optout", "+8613800000000"),
        "imap_lease": k.plugin("imap", "lease", "support"),
        "imap_state": k.plugin("imap", "state", "support"),
        "imap_seen": k.plugin("imap", "seen", "support"),
        "imap_message_ids": k.plugin("imap", "message-ids", "support"),
        "mail_thread": k.plugin("mail", "thread", "<a@b>"),
        "mail_acks": k.plugin("mail", "acks", "a@example.com", 490000),
        "call": k.plugin("call", "CA1"),
        "wechat_token": k.plugin("wechat", "token", "wx1"),
        "wechat_token_lock": k.plugin("wechat", "token-lock", "wx1"),
    }


PINNED = {
    "arq_queue": "cg:arq:queue",
    "wake": "cg:wake",
    "pending": "cg:pending",
    "leases": "cg:leases",
    "skills": "cg:skills",
    "timers": "cg:timers",
    "timers_inflight": "cg:timers:inflight",
    "escalations": "cg:escalations",
    "deadline_policy": "cg:policy:deadlines",
    "deadline_policy_history": "cg:policy:deadlines:history",
    "clock_offset": "cg:clock:offset",
    "agent_skills": "cg:agents:skills",
    "routing_active": "cg:routing:active",
    "routing_seq": "cg:routing:seq",
    "routing_history": "cg:routing:history",
    "quarantine": "cg:quarantine",
    "workers": "cg:workers",
    "intake_load": "cg:intake:load",
    "outbox": "cg:outbox",
    "metrics": "cg:metrics",
    "templates": "cg:templates",
    "incidents": "cg:incidents",
    "refunds_awaiting": "cg:refunds:awaiting",
    "refunds_returned": "cg:refunds:returned",
    "model_current": "cg:model:current",
    "model_versions": "cg:model:versions",
    "model_history": "cg:model:history",
    "model_previous": "cg:model:previous",
    "model_artefacts": "cg:model:artefacts",
    "model_training": "cg:model:training",
    "model_corrections": "cg:model:corrections",
    "model_corrections_order": "cg:model:corrections:order",
    "model_artefact": "cg:model:artefact:v3",
    "none": "cg:-",
    "msg": "cg:msg:msg_1",
    "raw": "cg:raw:msg_1",
    "idem": "cg:idem:app:app:c-1",
    "rate_contact": "cg:rate:contact:phone:+8613800000000:29000000",
    "rate_channel": "cg:rate:channel:sms:1740000000",
    "contact_lock": "cg:lock:contact:phone:+8613800000000",
    "quarantined_once": "cg:quarantined-once:email:abc123",
    "quarantined": "cg:quarantine:q_1",
    "complaint": "cg:complaint:cmp_1",
    "case": "cg:case:C-20260101-000001",
    "case_seq": "cg:caseseq:20260101",
    "idx": "cg:idx:status:new",
    "idx_all": "cg:idx:all",
    "delivery": "cg:delivery:cmp_1",
    "contact": "cg:contact:phone:+8613800000000",
    "contact_label": "cg:contact:phone:+8613800000000",
    "open_cases": "cg:customer:cus_1:open",
    "customer_history": "cg:customer:cus_1:history",
    "customer_contacts": "cg:customer:cus_1:contacts",
    "after_resolved": "cg:after:phone:+8613800000000",
    "queue": "cg:queue:cards",
    "queue_age": "cg:queueage:cards",
    "lease": "cg:lease:cmp_1",
    "fr_due": "cg:frdue:cards",
    "outbound": "cg:outbound:sms:SM1",
    "outbound_by_contact": "cg:outbound-to:messenger:psid-1",
    "last_inbound": "cg:lastin:whatsapp:+8613800000000",
    "routing_version": "cg:routing:version:3",
    "incident": "cg:incident:inc_1",
    "incident_complaints": "cg:incident:inc_1:complaints",
    "incidents_open": "cg:incidents:open:app_fault",
    "incident_recent": "cg:inc:recent:app_fault",
    "incident_texts": "cg:inc:text:app_fault",
    "incident_notes": "cg:inc:notes:app_fault",
    "incident_lock": "cg:inc:lock:app_fault",
    "imap_synced": "cg:metrics:imap_synced:support",
    "sms_optout": "cg:sms:optout:+8613800000000",
    "imap_lease": "cg:imap:lease:support",
    "imap_state": "cg:imap:state:support",
    "imap_seen": "cg:imap:seen:support",
    "imap_message_ids": "cg:imap:message-ids:support",
    "mail_thread": "cg:mail:thread:<a@b>",
    "mail_acks": "cg:mail:acks:a@example.com:490000",
    "call": "cg:call:CA1",
    "wechat_token": "cg:wechat:token:wx1",
    "wechat_token_lock": "cg:wechat:token-lock:wx1",
}


def test_every_key_keeps_the_name_deployed_data_has():
    assert named(Keys("cg:")) == PINNED


def test_arq_job_keys_are_arqs_with_the_desks_hash_tag():
    k = Keys("{desk7}:cg:")
    assert k.job_id("ingest:msg_1") == "{desk7}ingest:msg_1"
    assert job_key("{desk7}ingest:msg_1") == "arq:job:{desk7}ingest:msg_1"
    assert Keys.arq_job("{desk7}x") == "arq:job:{desk7}x"
    assert Keys.arq_in_progress("{desk7}x") == "arq:in-progress:{desk7}x"
    assert Keys.arq_retry("{desk7}x") == "arq:retry:{desk7}x"
    assert Keys.arq_result("{desk7}x") == "arq:result:{desk7}x"
    assert Keys("cg:").job_id("ingest:msg_1") == "ingest:msg_1"  # no tag, no change


def test_every_key_of_a_desk_is_in_its_hash_slot():
    """Redis Cluster: a desk's scripts and transactions touch many keys at once, so all of them
    must hash to the prefix's slot."""
    prefix = "{desk7}:cg:"
    k = Keys(prefix)
    slot = key_slot(prefix.encode())
    keys = list(named(k).values()) + [job_key(k.job_id("ingest:msg_1")), Keys.arq_in_progress(k.job_id("x"))]
    assert {key: key_slot(key.encode()) for key in keys} == {key: slot for key in keys}


def test_scripts_get_the_same_names_in_parts():
    """Lua scripts that learn a key's variable part as they run are given its head and tail."""
    k = Keys("cg:")
    assert Keys.around(k.customer_history) == ("cg:customer:", ":history")
    assert Keys.around(k.customer_contacts) == ("cg:customer:", ":contacts")
    assert Keys.around(k.open_cases) == ("cg:customer:", ":open")
    assert Keys.head(k.contact_label) == "cg:contact:"
    assert Keys.head(k.lease) == "cg:lease:"
    assert Keys.head(k.queue) == "cg:queue:"
    assert Keys.head(k.queue_age) == "cg:queueage:"
    assert Keys.head(k.case) == "cg:case:"
    with pytest.raises(ValueError):
        Keys.head(k.customer_history)


def test_keys_of_a_prefix_or_of_keys():
    k = Keys("cg:")
    assert Keys.of(k) is k
    assert Keys.of("cg:").metrics == "cg:metrics"


# Files (and folders) another change is restructuring right now; their keys move to Keys after it.
# Shrink this to nothing then.
NOT_YET: set[str] = set()  # every module names its keys through Keys
# keys.p anywhere; a prefix or p with a key's text after it: prefix + "x", f"{prefix}x", f"{self.p}x"
HAND_BUILT = re.compile(r"""keys\.p\b|\b(?:prefix|p) \+ ["']|\{(?:self\.)?(?:prefix|p)\}\w""")


def test_no_key_is_built_by_hand_outside_keys():
    found = []
    for folder in ("gateway", "router", "adapters", "plugins", "normalizer"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "router/store/keys.py" or any(rel == n or rel.startswith(n + "/") for n in NOT_YET):
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if HAND_BUILT.search(line):
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "keys built from the prefix by hand (name them in router/store/keys.py):\n" + "\n".join(found)
