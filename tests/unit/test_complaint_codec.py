"""How a complaint is stored: Zstandard-compressed JSON written; the zlib form of earlier versions
and plain JSON still read; anything else refused with one of ``UNDECODABLE``."""

from __future__ import annotations

import threading
import zlib
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from normalizer.schema import Complaint, ComplaintStatus, Contact, HistoryEvent
from router.store.codec import COMPRESSED, UNDECODABLE, ZSTD, _strip, decode_complaint, encode_complaint

T0 = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)


def _complaint(n: int = 1) -> Complaint:
    return Complaint(id=f"cmp_{n}", case_number="C-20261202-PLACEHOLDER", status=ComplaintStatus.accepted,
                     category="transaction", formal_complaint=False, channel="app", customer_id=f"cus_{n}",
                     contact=Contact(kind="app_user", value=f"u{n}"), language="zh", created_at=T0,
                     updated_at=T0 + timedelta(seconds=5), skill="payments", priority=5,
                     history=[HistoryEvent(at=T0 + timedelta(seconds=i), actor="worker", action=f"step_{i}",
                                           detail={"note": "转账显示成功但对方没有收到" * 3}) for i in range(6)])


def _plain(complaint: Complaint) -> bytes:
    return msgspec.json.encode(_strip(msgspec.to_builtins(complaint)))


def test_a_complaint_is_written_compressed_and_read_back_whole() -> None:
    complaint = _complaint()
    data = encode_complaint(complaint, {"C-20261202-PLACEHOLDER": "C-20261202-000042"})
    assert data[:1] == ZSTD
    assert len(data) < len(_plain(complaint)) / 2
    back = decode_complaint(data)
    assert back.case_number == "C-20261202-000042"
    back.case_number = complaint.case_number
    assert back == complaint


def test_the_zlib_form_earlier_versions_wrote_and_plain_json_are_still_read() -> None:
    complaint = _complaint()
    assert decode_complaint(COMPRESSED + zlib.compress(_plain(complaint), 1)) == complaint
    assert decode_complaint(_plain(complaint)) == complaint


@pytest.mark.parametrize("data", [ZSTD + b"not zstd at all", ZSTD, COMPRESSED + b"not zlib at all", b"{\"id\":",
                                  ZSTD + encode_complaint(_complaint())[1:20]])
def test_what_is_not_a_stored_complaint_is_refused_as_undecodable(data: bytes) -> None:
    with pytest.raises(UNDECODABLE):
        decode_complaint(data)


def test_threads_encode_and_decode_at_once_without_mixing_their_complaints() -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(200):
                complaint = _complaint(n * 1000 + i)
                assert decode_complaint(encode_complaint(complaint)) == complaint
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
