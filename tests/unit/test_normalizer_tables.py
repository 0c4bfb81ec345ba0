"""Table-driven: amounts, transaction ids, language, categories (zh / en), hard negatives too."""

from __future__ import annotations

from decimal import Decimal

import pytest

from normalizer.extract import extract_amount, extract_transaction_id, format_amount, parse_amount
from normalizer.language import detect_language
from router.categorise import CATEGORIES, categorise

AMOUNTS = [
    ("¥128.50", ("128.50", "CNY")),
    ("我付了￥128.5", ("128.50", "CNY")),
    ("被扣了128.5元", ("128.50", "CNY")),
    ("扣了 128.50 元", ("128.50", "CNY")),
    ("RMB 2,000 was taken", ("2000.00", "CNY")),
    ("CNY 99", ("99.00", "CNY")),
    ("人民币 300", ("300.00", "CNY")),
    ("charged $35.99 twice", ("35.99", "USD")),
    ("US$ 12", ("12.00", "USD")),
    ("USD 12.5", ("12.50", "USD")),
    ("HK$100", ("100.00", "HKD")),
    ("HKD 100", ("100.00", "HKD")),
    ("€5", ("5.00", "EUR")),
    ("£20 fee", ("20.00", "GBP")),
    ("１２８．５０元", ("128.50", "CNY")),
    ("转账 50块", ("50.00", "CNY")),
    ("1,234,567.89元", ("1234567.89", "CNY")),
    # hard negatives: no currency marker, phone, card, ID, date, order numbers
    ("call 13800138000", None),
    ("+86 138 0013 8000", None),
    ("card 6222 0212 3456 7890 123", None),
    ("身份证 11010519491231002X", None),
    ("on 2026-11-22 at 10:30", None),
    ("订单号 88812345678", None),
    ("I waited 3 days", None),
    ("", None),
    ("¥99999999999999", None),  # absurd
]


@pytest.mark.parametrize("text, expected", AMOUNTS)
def test_extract_amount(text, expected):
    assert extract_amount(text) == expected


TRANSACTIONS = [
    ("交易号：2026112200001234", "2026112200001234"),
    ("交易号 T2026112212345678", "T2026112212345678"),
    ("payment T2026112212345678 failed", "T2026112212345678"),
    ("订单号 ABC123456789", "ABC123456789"),
    ("order no. 88812345678", "88812345678"),
    ("Order #A1B2C3D4E5", "A1B2C3D4E5"),
    ("transaction id: TX-99887766", "TX-99887766"),
    ("流水号 4200001234202611", "4200001234202611"),
    ("商户单号：m20261122001", "M20261122001"),
    ("call 13800138000", None),
    ("on 2026-11-22", None),
    ("¥128.50", None),
    ("the order was wrong", None),
]


@pytest.mark.parametrize("text, expected", TRANSACTIONS)
def test_extract_transaction_id(text, expected):
    assert extract_transaction_id(text) == expected


@pytest.mark.parametrize(
    "value, expected",
    [("128.50", "128.50"), ("128.5", "128.50"), ("2000", "2000.00"), ("0", "0.00"), ("999999999999.99", "999999999999.99")],
)
def test_parse_amount_accepts(value, expected):
    assert format_amount(parse_amount(value)) == expected


@pytest.mark.parametrize("value", ["12.345", "-3", "1e5", "abc", "", " ", "1,000", "1000000000000", "NaN", "+5", ".5"])
def test_parse_amount_refuses(value):
    with pytest.raises(ValueError):
        parse_amount(value)


def test_format_amount_rounds_to_cents():
    assert format_amount(Decimal("5")) == "5.00"


LANGUAGES = [
    ("我被重复扣款了", "zh"),
    ("app闪退打不开", "zh"),
    ("I was charged twice", "en"),
    ("refund 退款 please, order number 12345", "en"),
    ("退款退款 refund please", "zh"),
    ("", "en"),
    ("12345", "en"),
]


@pytest.mark.parametrize("text, expected", LANGUAGES)
def test_detect_language(text, expected):
    assert detect_language(text) == expected


CATEGORISED = [
    ("我被重复扣款了两次，请退款", "payment_amount", False),
    ("I was charged twice for my coffee", "payment_amount", False),
    ("refund not received", "payment_amount", False),
    ("付款失败但是钱扣了", "payment_amount", False),
    ("I paid by mistake to the wrong person", "payment_amount", False),
    ("payment failed at the merchant", "transaction", False),
    ("交易记录查不到", "transaction", False),
    ("我的账户被冻结了", "account_security", False),
    ("someone hacked my account", "account_security", False),
    ("I did not get the OTP", "account_security", False),
    ("提现手续费太高了", "fee_dispute", False),
    ("please waive the withdrawal fee", "fee_dispute", False),
    ("app闪退打不开", "function_fault", False),
    ("the app crashes after the update", "function_fault", False),
    ("我的余额是多少", "balance_query", False),
    ("what's my balance", "balance_query", False),
    ("hello", "other", False),
    ("", "other", False),
    ("我要投诉：重复扣款", "payment_amount", True),
    ("I want to complain about the withdrawal fee", "fee_dispute", True),
    ("I will escalate this to the regulator, refund not received", "payment_amount", True),
    ("I'd like to file a complaint", "other", True),
    ("coffee feels different today", "other", False),  # 'fee' inside a word is not a fee
    ("debug mode", "other", False),  # 'bug' inside a word is not a fault
]


@pytest.mark.parametrize("text, category, formal", CATEGORISED)
def test_categorise(text, category, formal):
    result = categorise(text)
    assert (result.category, result.formal_complaint) == (category, formal)


def test_valid_hint_is_honoured_and_formal_still_computed():
    result = categorise("我要投诉", category_hint="fee_dispute")
    assert (result.category, result.formal_complaint, result.source) == ("fee_dispute", True, "hint")


def test_unknown_hint_is_ignored():
    assert categorise("refund", category_hint="nonsense").category == "payment_amount"


def test_seven_categories():
    assert CATEGORIES == ("account_security", "transaction", "payment_amount", "fee_dispute", "function_fault",
                          "balance_query", "other")
