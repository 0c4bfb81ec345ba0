"""Table-driven: amounts, transaction ids, language, categories (zh / en), hard negatives too."""

from __future__ import annotations

from decimal import Decimal

import pytest

from normalizer.extract import (
    extract_amount,
    extract_amounts,
    extract_transaction_id,
    format_amount,
    parse_amount,
    transaction_key,
)
from normalizer.language import detect_language
from router.categorise import categorise
from normalizer.categories import CATEGORIES

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


# amounts as customers say them: Chinese numerals, English words, plain numbers in Chinese text
SPOKEN_AMOUNTS = [
    ("昨天付款失败 钱扣了 六十八块八", ("68.80", "CNY")),
    ("转错了 八百块 能追回吗", ("800.00", "CNY")),
    ("我转账给我妈 转了两千五 她没收到", ("2500.00", "CNY")),
    ("付款失败但是钱扣了 一百二十八块五", ("128.50", "CNY")),
    ("余额比昨天少了五毛", ("0.50", "CNY")),
    ("少了5毛", ("0.50", "CNY")),
    ("三块五毛", ("3.50", "CNY")),
    ("一千零五十 一直不变", ("1050.00", "CNY")),
    ("扣 了 五 十 三 块 二 对 吗", ("53.20", "CNY")),  # a voice transcript spaces every character
    ("一次4块 一次4块", ("4.00", "CNY")),  # the 一 after 块 counts times, it is no 角
    ("RMB 1,280.00 was taken", ("1280.00", "CNY")),
    ("it's $1,600. Nothing left my account", ("1600.00", "USD")),
    ("about $8k a month", ("8000.00", "USD")),
    ("这次提现5万", ("50000.00", "CNY")),
    ("全家买饭团58.8 扣了两次", ("58.80", "CNY")),
    ("房租3200扣了两次", ("3200.00", "CNY")),
    ("I topped up a hundred dollars this morning", ("100.00", "USD")),
    ("they refunded it, it was like sixty two dollars thirty", ("62.30", "USD")),
    ("I got hit with a five dollar fee", ("5.00", "USD")),
    ("it should be about four hundred and thirty pounds", ("430.00", "GBP")),
    ("got charged eight seventy five and nobody called", ("8.75", "USD")),
    ("I was charged thirty five ninety nine for it", ("35.99", "USD")),
    ("the transaction is eight eight one double-oh two three four seven one nine sixty four twenty twice",
     ("64.20", "USD")),
    ("a refund of three twenty eight sixty but only two hundred showed up", ("328.60", "USD")),
    ("the weekend fee a dollar fifty every time", ("1.50", "USD")),
    # not amounts: counts, approximations, versions, hotlines, phone numbers, plain English numbers
    ("第三次问了 试了两千次", None),
    ("昨天还有三百多 我啥也没买", None),
    ("攒了好几千了", None),
    ("iPhone 15，iOS 18.1，删了重装也一样", None),
    ("刚update到 9.0 android 12", None),
    ("我已经打了12363反映", None),
    ("原来的 137 2041 6638 已经停用", None),
    ("试了3次 等了10天", None),
    ("one or two things at two thirty", None),
    ("幺五八 二零七三 六六幺四", None),
    ("我的订单号是123456 还没发货", None),
    ("卡尾号是8899 被扣了两次", None),
]


@pytest.mark.parametrize("text, expected", SPOKEN_AMOUNTS)
def test_amounts_in_words_and_numerals(text, expected):
    assert extract_amount(text) == expected


@pytest.mark.parametrize("a, b", [
    ("六十八块八", "¥68.80"), ("八百块", "800元"), ("两千五", "RMB 2,500"), ("一百二十八块五", "128.5元"),
    ("RMB 1,280.00", "1280块"), ("RMB 1,280.00", "1,280元"), ("$35.99", "charged thirty five ninety nine"),
    ("sixty four twenty twice", "$64.20"), ("四十七块六", "退款 47.6"),
])
def test_one_amount_written_two_ways_compares_equal(a, b):
    assert extract_amounts(a)[0].value == extract_amounts(b)[0].value


def test_every_amount_of_a_text_is_listed_in_order():
    found = extract_amounts("提现1000 扣了我10块 说好的千分之一呢")
    assert [format_amount(f.value) for f in found] == ["1000.00", "10.00"]


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
    # labelled in other words, bare codes, read out digit by digit
    ("订单88231的refund呢", "88231"),
    ("退款单号TK8823341那笔268还是没到", "TK8823341"),
    ("ref no. 88123004. app shows 'in progress'", "88123004"),
    ("Pls help. Ref TU20260311-0042", "TU20260311-0042"),
    ("EB-77120934 嗰筆電費仲未搞掂", "EB-77120934"),
    ("Different order this time - #A77388, refund of $19.99", "A77388"),
    ("第三次问了 4200001987202603240031 这笔", "4200001987202603240031"),
    ("单号是 T 二零二六零三幺八 五五幺二零七 付款失败", "T20260318551207"),
    ("the transaction is eight eight one double-oh two three four seven one nine", "88100234719"),
    ("calling about order eight eight two three one the seller cancelled it", "88231"),
    ("a transaction T as in Tom two zero two six zero three one zero four four seven one I was charged",
     "T202603104471"),
    ("I sent a text earlier about ref P X seven seven one two zero", "PX77120"),
    ("单号 202602284471 09 投诉电话打过了", "20260228447109"),
    # not transaction ids: case numbers, ID numbers, phone numbers, a count after an id
    ("Any update on case C-20261122-000123?", None),
    ("我身份证号 44030519830416639X 实名早就认证过了", None),
    ("My number is +1 646-555-0192", None),
    ("我的手机 13800138000 收不到", None),
    ("my case #CS-20931 is still open", None),
]


@pytest.mark.parametrize("text, expected", TRANSACTIONS)
def test_extract_transaction_id(text, expected):
    assert extract_transaction_id(text) == expected


@pytest.mark.parametrize("a, b", [
    ("TU20260311-0042", "tu 20260311 0042"),
    ("T20260318551207", "T 二零二六零三幺八 五五幺二零七"),
    ("88231", "eight eight two three one"),
    ("PX-77120", "P X seven seven one two zero"),
    ("TXN-20260321-7781", "T X N dash two zero two six zero three two one dash seven seven eight one"),
])
def test_one_transaction_id_in_two_spellings_has_one_key(a, b):
    assert transaction_key(a) == transaction_key(b)


def test_different_transaction_ids_keep_different_keys():
    assert transaction_key("TU20260311-0042") != transaction_key("TU20260319-0107")
    assert transaction_key("R 八八 四零 幺二 三三") != transaction_key("R 八八 四二 零零 五六")


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
