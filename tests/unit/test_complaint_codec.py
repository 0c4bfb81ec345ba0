"""How a complaint is stored: Zstandard-compressed JSON written; the zlib form of earlier versions
and plain JSON still read; anything else refused with one of ``UNDECODABLE``."""

from __future__ import annotations

import enum
import threading
import types
import typing
import zlib
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from normalizer.schema import Complaint, ComplaintStatus, Contact, HistoryEvent
from router.store.codec import COMPRESSED, UNDECODABLE, ZSTD, _zstd, decode_complaint, encode_complaint

T0 = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)


def _complaint(n: int = 1) -> Complaint:
    return Complaint(id=f"cmp_{n}", case_number="C-20261202-PLACEHOLDER", status=ComplaintStatus.accepted,
                     category="transaction", formal_complaint=False, channel="app", customer_id=f"cus_{n}",
                     contact=Contact(kind="app_user", value=f"u{n}"), language="zh", created_at=T0,
                     updated_at=T0 + timedelta(seconds=5), skill="payments", priority=5,
                     history=[HistoryEvent(at=T0 + timedelta(seconds=i), actor="worker", action=f"step_{i}",
                                           detail={"note": "转账显示成功但对方没有收到" * 3}) for i in range(6)])


def _strip(value: Any) -> Any:
    """None, empty lists and empty dicts left out, at every depth (what earlier versions stored)."""
    if type(value) is dict:
        return {k: _strip(v) for k, v in value.items() if v is not None and v != [] and v != {}}
    if type(value) is list:
        return [_strip(v) for v in value]
    return value


def _plain(complaint: Complaint) -> bytes:
    return msgspec.json.encode(_strip(msgspec.to_builtins(complaint)))


def _filled(annotation: Any, n: int = 0) -> Any:
    """A value of ``annotation`` that is no field's default: every field of a Struct set, every list
    and dict with one entry, every optional given."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _filled(next(a for a in args if a is not type(None)), n)
    if origin is list:
        return [_filled(args[0], n)]
    if origin is dict:
        return {"k": _filled(args[1], n)}
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation(**{f.name: _filled(f.type, n + 1) for f in msgspec.structs.fields(annotation)})
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return list(annotation)[-1]
    return {str: f"v{n}", bool: True, int: 7 + n, float: 0.25, datetime: T0 + timedelta(seconds=n)}[annotation]


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
    for complaint in (_complaint(), _filled(Complaint)):
        assert decode_complaint(COMPRESSED + zlib.compress(_plain(complaint), 1)) == complaint
        assert decode_complaint(_plain(complaint)) == complaint
        assert decode_complaint(ZSTD + _zstd.compressor.compress(_plain(complaint))) == complaint  # the last form


def test_every_field_set_and_every_field_at_its_default_are_read_back_whole() -> None:
    full = _filled(Complaint)
    assert all(getattr(full, f.name) != f.default for f in msgspec.structs.fields(Complaint) if not f.required)
    assert decode_complaint(encode_complaint(full)) == full
    bare = Complaint(id="cmp_0", case_number="C-0", status=ComplaintStatus.accepted, category="other",
                     formal_complaint=False, channel="sms", customer_id="cus_0", contact=Contact(kind="phone", value="x"),
                     language="en", created_at=T0, updated_at=T0)
    assert decode_complaint(encode_complaint(bare)) == bare
    stored = msgspec.json.decode(_zstd.decompressor.decompress(encode_complaint(bare)[1:]))
    assert set(stored) == {"id", "case_number", "status", "category", "formal_complaint", "channel", "customer_id",
                           "contact", "language", "created_at", "updated_at"}  # what holds its default is left out
    assert stored["contact"] == {"kind": "phone", "value": "x"}


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
