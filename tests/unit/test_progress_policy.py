"""The progress policy's quiet hours, intervals and validation, and the materials catalogue's words
(table-driven; the flows themselves are in tests/integration/test_progress_updates.py and
test_materials.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from normalizer.schema import MATERIAL_KINDS
from router.cases.catalogue import NAMES, kinds_named
from router.deadlines import DeadlinePolicy, ProgressPolicy, QuietHours


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


NIGHT = QuietHours(timezone="Asia/Shanghai", start="22:00", end="08:00")  # 14:00–00:00 UTC
DAY = QuietHours(timezone="UTC", start="12:00", end="13:30")


@pytest.mark.parametrize("quiet, moment, released", [
    (NIGHT, "2026-12-01T13:59:00", "2026-12-01T13:59:00"),  # 21:59 in Shanghai: not yet
    (NIGHT, "2026-12-01T14:00:00", "2026-12-02T00:00:00"),  # 22:00: until 08:00 the next morning
    (NIGHT, "2026-12-01T19:30:00", "2026-12-02T00:00:00"),  # 03:30: until 08:00 the same morning
    (NIGHT, "2026-12-02T00:00:00", "2026-12-02T00:00:00"),  # 08:00: over
    (DAY, "2026-12-01T12:30:00", "2026-12-01T13:30:00"),  # a window that does not cross midnight
    (DAY, "2026-12-01T11:59:59", "2026-12-01T11:59:59"),
])
def test_quiet_hours_hold_until_they_end(quiet, moment, released):
    assert quiet.release(utc(moment)) == utc(released)


@pytest.mark.parametrize("intervals, category, formal, expected", [
    ({"default": 100, "formal": 50}, "transaction", False, 100),
    ({"default": 100, "formal": 50}, "transaction", True, 50),
    ({"default": 100, "formal": 50, "payment_amount": 0}, "payment_amount", True, 0),  # the category's own wins
    ({"default": 0}, "other", True, 0),
])
def test_interval_per_category_formal_default(intervals, category, formal, expected):
    assert ProgressPolicy(interval_seconds=intervals).interval_for(category, formal) == expected


@pytest.mark.parametrize("progress, problem", [
    (ProgressPolicy(interval_seconds={"formal": 10}), "'default' entry is required"),
    (ProgressPolicy(interval_seconds={"default": 10, "refunds": 5}), "'refunds' is not"),
    (ProgressPolicy(on_changes=["taken", "solved"]), "unknown change 'solved'"),
    (ProgressPolicy(quiet_hours=QuietHours(timezone="Mars/Base")), "unknown time zone"),
    (ProgressPolicy(quiet_hours=QuietHours(start="08:00", end="08:00")), "must differ"),
])
def test_a_bad_progress_policy_is_refused_by_name(progress, problem):
    problems = DeadlinePolicy(progress=progress).validate()
    assert any(problem in p and p.startswith("progress.") for p in problems), problems


def test_the_default_policy_is_valid():
    assert DeadlinePolicy().validate() == []


@pytest.mark.parametrize("text, kinds", [
    ("扣款截图", ["charge_screenshot"]),
    ("Screenshot_20261201.png", ["charge_screenshot"]),
    ("银行流水.pdf", ["bank_statement"]),
    ("my bank statement", ["bank_statement"]),
    ("订单详情 order.png", ["transaction_record"]),
    ("身份证正面", ["id_proof"]),
    ("ID front.jpg", ["id_proof"]),
    ("I paid twice", []),  # "id" is a whole word, not part of one
    ("与商户的聊天记录", ["communication_records"]),
])
def test_words_that_name_a_material(text, kinds):
    assert kinds_named(text) == kinds


def test_the_catalogue_names_every_kind_in_both_languages():
    assert set(NAMES) == set(MATERIAL_KINDS)
    assert all(set(names) == {"zh", "en"} for names in NAMES.values())
