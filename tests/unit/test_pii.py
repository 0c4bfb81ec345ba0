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
