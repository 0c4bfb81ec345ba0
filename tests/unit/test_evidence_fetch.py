"""The evidence fetch's pieces: announced attachments become pending evidence under stable ids,
the fetch policy (tries, doubling backoff, a bound per try under the job timeout), reasons fit to
show an agent, and evidence stored before these fields existed still decoding as stored."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
import pytest

from gateway.settings import load_settings
from router.store import decode_complaint, encode_complaint
from normalizer.schema import Complaint, ComplaintStatus, Contact, EvidenceLink, InboundMessage
from router.evidence_fetch import FetchPolicy, announce, arq_max_tries, evidence_jobs, reason_of

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
STORED = EvidenceLink(id="ev_" + "a" * 32, sha256="a" * 64, content_type="image/png", size=48)


def message(*attachments: EvidenceLink) -> InboundMessage:
    return InboundMessage(id="msg_1k8abc", channel="twilio_sms", sender=Contact(kind="phone", value="+8613800138000"),
                          text="charged twice", received_at=NOW, attachments=list(attachments))


def announced(n: int, url: str = "https://api.twilio.com/media/ME1") -> EvidenceLink:
    return EvidenceLink(id=f"ev_pending_{n}", sha256="", content_type="image/png", size=0, source="mms",
                        remote_url=url)


def test_announced_attachments_become_pending_under_ids_of_their_own():
    links = announce(message(announced(0), STORED, announced(2, "https://api.twilio.com/media/ME2")))
    assert [(e.id, e.state) for e in links] == [("ev_1k8abc_0", "pending"), (STORED.id, "stored"),
                                                ("ev_1k8abc_2", "pending")]
    assert links[0].remote_url == "https://api.twilio.com/media/ME1" and links[0].tries == 0
    again = message(*links)
    assert announce(again) == links  # a re-run of the message's job builds the same evidence


def test_one_fetch_job_per_pending_attachment_with_a_fixed_id():
    links = announce(message(announced(0), STORED, announced(1)))
    complaint = Complaint(id="cmp_1k8abc", case_number="C-20261123-000001", status=ComplaintStatus.accepted,
                          category="other", formal_complaint=False, channel="twilio_sms", customer_id="cus_1",
                          contact=Contact(kind="phone", value="+8613800138000"), language="en", created_at=NOW,
                          updated_at=NOW, evidence=links)
    jobs = evidence_jobs(complaint)
    assert [(j.function, j.job_id, j.args) for j in jobs] == [
        ("fetch_evidence", "evidence:cmp_1k8abc:ev_1k8abc_0", ("cmp_1k8abc", "ev_1k8abc_0", "twilio_sms")),
        ("fetch_evidence", "evidence:cmp_1k8abc:ev_1k8abc_2", ("cmp_1k8abc", "ev_1k8abc_2", "twilio_sms")),
    ]
    # and the states survive the store's encoding
    assert [e.state for e in decode_complaint(encode_complaint(complaint)).evidence] == ["pending", "stored", "pending"]


def test_evidence_stored_before_states_existed_decodes_as_stored():
    old = b'{"id":"ev_1","sha256":"' + b"b" * 64 + b'","content_type":"image/png","size":48,"source":"mms"}'
    link = msgspec.json.decode(old, type=EvidenceLink)
    assert (link.state, link.tries, link.error) == ("stored", 0, None)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(msgspec.json.decode(old)), type=EvidenceLink) == link


def test_fetch_policy_defaults_settings_and_bounds():
    settings = load_settings({})
    policy = FetchPolicy.of(settings)
    assert (policy.tries, policy.first_backoff_s) == (10, 1.0)
    assert policy.try_timeout_s == settings.job_timeout_seconds - 5  # a try ends before its job is stopped
    assert [policy.delay(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert arq_max_tries(settings) > policy.tries

    class Custom(msgspec.Struct, frozen=True):
        evidence_fetch_tries: int = 3
        evidence_fetch_backoff_seconds: float = 0.5
        evidence_fetch_timeout_seconds: float = 4.0
        job_timeout_seconds: int = 60

    custom = FetchPolicy.of(Custom())
    assert (custom.tries, custom.try_timeout_s, [custom.delay(n) for n in (1, 2)]) == (3, 4.0, [0.5, 1.0])
    assert FetchPolicy.of(Custom(evidence_fetch_tries=0)).tries == 1


@pytest.mark.parametrize("exc, expected", [
    (RuntimeError("Twilio media answered 503"), "RuntimeError: Twilio media answered 503"),
    (TimeoutError(), "TimeoutError: no answer in time"),
    (RuntimeError("GET https://api.telegram.org/file/bot123:SECRET/photos/a.jpg failed"),
     "RuntimeError: GET <url> failed"),
])
def test_reasons_name_the_failure_without_urls(exc, expected):
    assert reason_of(exc) == expected


def test_reasons_carry_no_personal_data():
    reason = reason_of(ValueError("no media for +8613800138000 / li.lei@example.com"))
    assert "13800138000" not in reason and "li.lei@example.com" not in reason
