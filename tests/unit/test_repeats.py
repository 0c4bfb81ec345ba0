"""The repeat-report and incident matchers on their own, in Chinese and English."""

from datetime import datetime, timezone

import pytest

from normalizer.inbound import build_message
from normalizer.schema import Contact
from router.incidents import same_fault, tokens
from router.repeats import Fingerprint, find_repeat

NOW = 1_800_000_000_000
HOUR = 3_600_000


def msg(text, **kw):
    return build_message(message_id="msg_x", channel="app", sender=Contact(kind="app_user", value="u"), text=text,
                         received_at=datetime.now(timezone.utc), **kw)


def fp(category="payment_amount", age_h=1, amount="", txn="", text=""):
    from router.repeats import normalise_text

    return Fingerprint(category, NOW - age_h * HOUR, amount, txn, normalise_text(text)[:160])


@pytest.mark.parametrize("text, candidate, reason", [
    ("交易号 T2026112300000001 还没有退款", fp(txn="T2026112300000001", age_h=200), "same_transaction"),
    ("still no refund for transaction T2026112300000001", fp(txn="T2026112300000001"), "same_transaction"),
    ("被扣了128.50元，还没退", fp(amount="128.50 CNY"), "same_amount"),
    ("I still see the $45.00 charge, refund it", fp(amount="45.00 USD"), "same_amount"),
    ("app闪退打不开，无法付款！！", fp("function_fault", text="app闪退打不开，无法付款"), "similar_text"),
    ("The app keeps crashing when I open it!!", fp("function_fault", text="the app keeps crashing when I open it"),
     "similar_text"),
])
def test_each_rule_matches(text, candidate, reason):
    message = msg(text)
    category = candidate.category
    match = find_repeat({"cmp_1": candidate}, message, category, NOW, 72 * HOUR)
    assert match is not None and match.reason == reason


@pytest.mark.parametrize("text, candidate", [
    # same customer, same words, another transaction: two problems
    ("交易号 T2026112300000002 重复扣款，请退款", fp(txn="T2026112300000001", text="交易号 T2026112300000001 重复扣款，请退款")),
    ("charged twice for T2026112300000002", fp(txn="T2026112300000001", text="charged twice for T2026112300000001")),
    # another amount
    ("重复扣款 99.00 元，请退款", fp(amount="128.50 CNY", text="重复扣款 128.50 元，请退款")),
    ("charged $10.00 twice", fp(amount="12.00 USD", text="charged $12.00 twice")),
    # same amount but outside the window, or another category
    ("被扣了128.50元", fp(amount="128.50 CNY", age_h=100)),
    ("手续费 128.50 元太高", fp("payment_amount", amount="128.50 CNY")),
    # different texts
    ("我的账户被冻结了", fp("account_security", text="忘记密码怎么重置")),
    ("hi", fp("other", text="hi")),
])
def test_hard_negatives_never_match(text, candidate):
    message = msg(text)
    from router.categorise import categorise

    category = categorise(text).category if candidate.category != "payment_amount" else categorise(text).category
    assert find_repeat({"cmp_1": candidate}, message, category, NOW, 72 * HOUR) is None


def test_the_strongest_rule_and_newest_case_win():
    candidates = {"old_text": fp(text="我被重复扣款了请退款", age_h=5), "txn": fp(txn="T2026112300000009", age_h=30)}
    match = find_repeat(candidates, msg("我被重复扣款了请退款 T2026112300000009"), "payment_amount", NOW, 72 * HOUR)
    assert match.complaint_id == "txn"


@pytest.mark.parametrize("a, b", [
    ("app crashes when I pay", "付款时app闪退"),
    ("支付的时候应用崩溃了", "The app crashed while paying!"),
    ("无法登录app，一直报错", "cannot log in to the app, error"),
])
def test_incidents_recognise_one_fault_across_languages(a, b):
    assert same_fault(tokens(a), tokens(b))


@pytest.mark.parametrize("a, b", [
    ("app crashes when I pay", "cannot log in to the app"),
    ("提现手续费太高", "付款时app闪退"),
    ("app", "app"),  # too little to say
])
def test_incidents_keep_different_faults_apart(a, b):
    assert not same_fault(tokens(a), tokens(b))
