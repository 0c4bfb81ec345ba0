"""Reply ids keep their shapes (they are stored on cases, and e-mail threads and bounces carry
them as Message-IDs): fixed by what caused the reply where a re-run must find it again."""

from __future__ import annotations

import re

from router.cases import new_reply_id, reply_id_for
from router.jobs import complaint_id_for


def test_ids_fixed_by_their_cause():
    cid = complaint_id_for("msg_01JABCDEFGH0123456")
    assert reply_id_for(cid, "ack") == "rep_01JABCDEFGH0123456_ack"  # a new case's acknowledgement
    assert reply_id_for("msg_01JABCDEFGH0123456", "status") == "rep_01JABCDEFGH0123456_status"
    assert reply_id_for("msg_01JABCDEFGH0123456", "repeat") == "rep_01JABCDEFGH0123456_repeat"
    assert reply_id_for(cid, "inc_01JXYZ") == "rep_01JABCDEFGH0123456_inc_01JXYZ"  # an incident's answer


def test_fresh_ids_are_time_ordered_and_distinct():
    ids = [new_reply_id() for _ in range(50)]
    assert len(set(ids)) == 50 and all(re.fullmatch(r"rep_[0-9a-z]{19}", i) for i in ids), ids[:3]
