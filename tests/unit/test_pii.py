import logging

import pytest

from normalizer.pii import MaskingFilter, mask_text

CASES = [
    ("call me on 13800138000", "13800138000"),
    ("+86 138 0013 8000 is my number", "138 0013 8000"),
    ("card 6222 0212 3456 7890 123 was charged", "6222 0212 3456 7890 123"),
    ("身份证 11010519491231002X", "11010519491231002X"),
    ("mail me at Li.Wei@example.com", "Li.Wei@example.com"),
]


@pytest.mark.parametrize("text, secret", CASES)
def test_personal_numbers_are_masked(text, secret):
    assert secret not in mask_text(text)


@pytest.mark.parametrize("text", ["case C-20261122-000123 opened", "refund ¥128.50", "msg_0194f3a2b1c01234567abcd"])
def test_case_numbers_and_amounts_stay(text):
    assert mask_text(text) == text


def test_logging_filter_masks_arguments(caplog):
    log = logging.getLogger("test.pii")
    log.addFilter(MaskingFilter())
    with caplog.at_level(logging.INFO, logger="test.pii"):
        log.info("customer %s wrote from %s", "13800138000", "a@b.cn")
    assert "13800138000" not in caplog.text and "a@b.cn" not in caplog.text


# -- the precise detectors (list views, plugins) ------------------------------------------------

from normalizer.pii import china_id_ok, find_pii, luhn_ok, mask_pii  # noqa: E402


@pytest.mark.parametrize("text, kind", [
    ("卡号 6222 0212 3456 7890 128 被盗刷", "card"),
    ("my visa 4111-1111-1111-1111 was charged", "card"),
    ("身份证号 11010519491231002X", "id_number"),
    ("id 440524188001010014 please", "id_number"),
    ("电话 13800138000", "phone"),
    ("call +44 20 7946 0958", "phone"),
    ("座机 010-62345678", "phone"),
    ("email LI.Lei@Example.COM", "email"),
])
def test_each_kind_is_found_and_masked(text, kind):
    found = find_pii(text)
    assert [f.kind for f in found] == [kind]
    value = text[found[0].start:found[0].end]
    assert value not in mask_pii(text)


@pytest.mark.parametrize("text", [
    "card 4111111111111112 fails Luhn",  # not a card: kept for the agent
    "身份证 110105194912310021 wrong check digit",
    "交易号 T2026112212345678 金额 128.50 元",
    "order 2026112312345678 on C-20261123-000001",
    "refund ¥128.50 on 2026-11-23",
])
def test_what_is_not_personal_data_stays(text):
    assert mask_pii(text) == text


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert china_id_ok("11010519491231002X") and not china_id_ok("11010519491231002Y")
    assert not china_id_ok("110105194913310021")  # month 13


def test_masks_keep_what_receipts_keep():
    assert mask_pii("4111 1111 1111 1111") == "[card ···1111]"
    assert mask_pii("13800138000") == "[phone ···00]"
