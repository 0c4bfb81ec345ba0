"""The repeat-report and incident matchers on their own, in Chinese and English."""

from datetime import datetime, timedelta, timezone

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


# -- repeat reports in other words -------------------------------------------------------------------

from router.categorise import categorise  # noqa: E402
from router.repeats import decode, fingerprint_of  # noqa: E402
from router.understanding.repeat_scoring import complaint_of, message_of, pairwise, predicted_groups  # noqa: E402

START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def case(text, created_h=0):
    """The fingerprint of the case ``text`` opens, as the worker stores it."""
    message = message_of({"id": "c1", "text": text, "customer": "u"}, START)
    complaint = complaint_of(message, categorise(text).category, "u")
    return decode(fingerprint_of(complaint, int(START.timestamp() * 1000) + created_h * HOUR))


def check(case_text, text, *, possible=False, hours_later=2):
    message = message_of({"id": "m2", "text": text, "customer": "u"}, START)
    now = int(START.timestamp() * 1000) + hours_later * HOUR
    return find_repeat({"cmp_1": case(case_text)}, message, categorise(text).category, now, 72 * HOUR,
                       possible=possible)


FOLLOW_UPS = [
    ("我转账给我妈 转了钱 她说没收到 我这边显示成功了", "还没处理？我妈那边还是没收到钱啊"),
    ("扫码的时候app直接闪退，每次都是，Android 12", "上次说的扫码闪退问题还是没修好，今天又试了三次"),
    ("我的账户被冻结了！什么都没干就给我冻了", "账户冻结的事 怎么还没人处理"),
    ("我要投诉你们的营销短信 一天发三条 退订了还发", "我之前反映过营销短信的事 昨天又来了两条"),
    ("我部電話update咗之後個app開唔到，一撳就彈返出嚟", "仲係開唔到呀，已經兩日冇得用，你哋幾時整好？"),
    ("Refund for my Tesco order is still not in my account after 14 days", "any update on the Tesco refund?"),
    ("I topped up my wallet from my bank and the top-up never arrived",
     "Still waiting on my top up, the bank says it left"),
    ("Someone logged into my account from a device I don't know and sent money out",
     "third time asking about the money someone sent from my account"),
    ("Refund for my order not received after 14 business days", "Re: the refund for my order - still nothing"),
    ("the app keeps logging me out every 30 seconds since yesterday", "hello?? still getting logged out constantly"),
]


@pytest.mark.parametrize("case_text, text", FOLLOW_UPS)
def test_follow_ups_in_other_words_join_the_open_case(case_text, text):
    match = check(case_text, text)
    assert match is not None and match.confident and match.reason in ("follow_up", "same_amount")


@pytest.mark.parametrize("first, second", [
    ("六十八块八", "¥68.80"), ("八百块", "800元"), ("两千五", "2,500元"), ("一百二十八块五", "128.50元"),
    ("RMB 1,280.00", "1280块"), ("RMB 1,280.00", "1,280元"),
])
def test_an_amount_said_again_in_other_numbers_joins_the_case(first, second):
    match = check(f"付款失败了 但是钱扣了 {first}", f"钱扣了{second} 退钱")
    assert match is not None and match.confident and match.reason == "same_amount"


@pytest.mark.parametrize("first, second", [("$35.99", "thirty five ninety nine"), ("$64.20", "sixty four twenty")])
def test_an_amount_said_in_english_words_joins_the_case(first, second):
    match = check(f"I was charged {first} twice at Shell, reverse the duplicate",
                  f"hi I texted about a double charge at Shell, I was charged {second} twice and it's still there")
    assert match is not None and match.confident and match.reason == "same_amount"


def test_a_transaction_id_in_another_spelling_joins_the_case():
    match = check("Pls help, top up with S$200 not in my wallet. Ref TU20260311-0042", "any news? ref tu 20260311 0042",
                  hours_later=200)
    assert match is not None and match.reason == "same_transaction"
    match = check("单号T20260318551207 付款失败 钱扣了 299", "我那个单号是 T 二零二六零三幺八 五五幺二零七 没人管")
    assert match is not None and match.reason == "same_transaction"
    # the case's id said again without its label
    match = check("can you check my transfer of S$480 went through? ref no. 88123004",
                  "88123004 still 'in progress' lah")
    assert match is not None and match.reason == "same_transaction"


@pytest.mark.parametrize("case_text, text", [
    # another transaction, whatever else agrees
    ("any help? top up with S$200 not in. ref TU20260311-0042",
     "any update?? top up still not in. ref TU20260319-0107"),
    ("订单88231的退款还没到", "还没处理？订单 90412 的退款也没到"),
    # another amount, in words or digits
    ("昨天付款失败 钱扣了 六十八块八", "还没处理？钱扣了23块"),
    ("I reported a $240 transfer I didn't make", "still waiting - the $24 transfer I didn't make"),
    # the customer says it is another problem
    ("点解扣咗两次钱？HK$38.50，扣咗两次", "又係我，今次係喺百佳，扣咗兩次，同上次嗰單唔同㗎"),
    ("今天在超市付款失败 钱也扣了", "还有个事 今天在菜市场又付款失败 钱也扣了 跟昨天那笔不是同一笔"),
    ("Refund for order #A77120 still not in my account", "Different order this time - refund not received either"),
    ("my octopus auto top-up charged me twice today", "not the octopus one - I got charged twice for one bus ride"),
    ("app crashes every single time i try to add a new card", "new problem: the app crashes on launch now"),
    # a different fault: another category and nothing in common
    ("app一直闪退 打不开", "还是没人回 提现手续费太高了"),
    ("Hi, the app won't open since the update", "still no answer - why is the withdrawal fee 2%?"),
])
def test_conflicts_keep_two_problems_apart(case_text, text):
    assert check(case_text, text, possible=True) is None


@pytest.mark.parametrize("case_text, text", [
    # words that look like "another problem" but are not
    ("拼多多退款显示已退到原支付方式 我这没有啊 47.6", "商家说已经退了 但是我还没收到 那笔47.6 到现在还没到"),
    ("账户被冻结了 什么都做不了 我要投诉", "这次是第三次问了 账户冻结的事到底有没有人管"),
    ("淘宝退款 两百三十九 一直没看到", "我不是投诉啊 就是想问问那个退款 239还是没到"),
    ("the app keeps logging me out every 30 seconds", "hello?? it's still not working now, still logging me out"),
])
def test_follow_ups_that_only_sound_like_a_new_problem_still_join(case_text, text):
    match = check(case_text, text)
    assert match is not None and match.confident


def test_a_weak_follow_up_is_only_a_possible_repeat():
    case_text, text = "我的余额为什么跟我算的不一样 我每笔都记账的 就是对不上", "上次问的事 有结果了吗"
    assert check(case_text, text) is None  # what the worker merges: nothing
    match = check(case_text, text, possible=True)
    assert match is not None and not match.confident


def test_old_fingerprints_still_decode_and_match():
    import msgspec

    old = msgspec.json.encode(["payment_amount", NOW - HOUR, "128.50 CNY", "T2026112300000001", "被扣了12850元还没退"])
    fp_old = decode(old)
    assert fp_old is not None and fp_old.amounts == [] and fp_old.terms == []
    match = find_repeat({"cmp_1": fp_old}, msg("交易号 T2026112300000001 还没有退款"), "payment_amount", NOW, 72 * HOUR)
    assert match is not None and match.reason == "same_transaction"
    match = find_repeat({"cmp_1": fp_old}, msg("被扣了一百二十八块五 还没退"), "payment_amount", NOW, 72 * HOUR)
    assert match is not None and match.reason == "same_amount"


def test_fingerprints_keep_amounts_and_terms_but_no_personal_numbers():
    fp_new = case("我要投诉！钱被人转走了 一笔2000一笔3000 手机号 +86 181 0233 9926")
    assert {"2000.00", "3000.00"} <= set(fp_new.amounts)
    raw = fingerprint_of(complaint_of(message_of({"id": "c", "text": "call me 13810264459 refund 退款", "customer": "u"},
                                                 START), "payment_amount", "u"), 0)
    assert b"13810264459" not in raw and b"0264459" not in raw
    # the same phone number said twice is still recognised (a one-way token)
    match = check("绑定的手机号被人改了 原来的号码是 幺三九 幺二零八 七七四六", "绑定手机号被改那个 有进展吗 原号 139 1208 7746")
    assert match is not None and match.confident


def test_pairwise_scoring_of_a_small_corpus():
    records = [
        {"id": "a1", "customer": "c1", "text": "付款失败 钱扣了 六十八块八", "dup_group": "g1", "not_dup_of": None},
        {"id": "a2", "customer": "c1", "text": "上次说的那笔68.8 到现在还没退回来", "dup_group": "g1", "not_dup_of": None},
        {"id": "a3", "customer": "c1", "text": "另外 今天又付款失败 这次是23块 钱也扣了", "dup_group": None, "not_dup_of": "a1"},
        {"id": "b1", "customer": "c2", "text": "付款失败 钱扣了 六十八块八", "dup_group": None, "not_dup_of": None},
    ]
    groups = predicted_groups(records, lambda text: categorise(text).category)
    assert groups == {"a1": "a1", "a2": "a1", "a3": "a3", "b1": "b1"}  # same words from another customer stay apart
    result = pairwise(records, groups)
    assert (result["precision"], result["recall"], result["hard_negatives"], result["hard_negatives_merged"]) == (
        1.0, 1.0, 1, 0)
    merged_all = pairwise(records, {"a1": "a1", "a2": "a1", "a3": "a1", "b1": "b1"})
    assert (merged_all["false_positives"], merged_all["hard_negatives_merged"]) == (2, 1)


def test_a_fingerprint_with_an_unreadable_amount_is_still_compared():
    # what another version (or a hand edit) stored: a value that is no decimal is ignored, not a crash
    stored = Fingerprint("payment_amount", NOW - HOUR, "x y", "", "", ["abc", "12.50"], ["<refund>"])
    match = find_repeat({"cmp_1": stored}, msg("还没退 12.5元"), "payment_amount", NOW, 72 * HOUR)
    assert match is not None and match.reason == "same_amount"


# -- a new case's fingerprint, completed when a repeat comes ------------------------------------------

from msgspec.structs import replace as _replace  # noqa: E402

from normalizer.schema import Amount  # noqa: E402
from router.repeats import completed, pending_fingerprint_of  # noqa: E402

PENDING_TEXTS = [text for pair in FOLLOW_UPS for text in pair] + [
    "交易号 T2026112300000001 被重复扣款 两笔 68.80 元",
    "I was charged twice: $128.50 for one coffee, card 4111 1111 1111 1111",
    "call me on +44 7700 900123 about the 2 x $100 top-up",
    "我的身份证 11010519491231002X 被冒用 开了账户",
    "hi",
    "",
]


@pytest.mark.parametrize("text", PENDING_TEXTS)
def test_a_pending_fingerprint_completed_from_its_first_message_is_the_full_one(text):
    message = message_of({"id": "c1", "text": text, "customer": "u"}, START)
    complaint = complaint_of(message, categorise(text).category, "u")
    created = int(START.timestamp() * 1000)
    for variant in (complaint, _replace(complaint, amount=Amount(value="99.00", currency="CNY")),
                    _replace(complaint, amount=None, transaction_id="T2026112300000009")):
        full = decode(fingerprint_of(variant, created))
        pending = decode(pending_fingerprint_of(variant, created))
        assert pending.pending and not full.pending
        assert not pending.text and not pending.terms  # nothing of the text yet: read when needed
        assert completed(pending, text) == full
        assert completed(full, "anything else") == full  # a full one is left as it is


def test_a_case_of_several_messages_is_fingerprinted_in_full():
    message = message_of({"id": "c1", "text": "charged twice $128.50", "customer": "u"}, START)
    complaint = complaint_of(message, "payment_amount", "u")
    two = _replace(complaint, messages=[*complaint.messages, _replace(complaint.messages[0], text="still nothing")])
    created = int(START.timestamp() * 1000)
    assert decode(pending_fingerprint_of(two, created)) == decode(fingerprint_of(two, created))


def test_a_pending_fingerprint_is_completed_from_the_message_the_case_opened_with():
    """Messages are kept in the order they were received: a follow-up the provider stamped
    earlier, or the messages of a case merged into this one, may come first. The fingerprint is
    completed from the message the case was opened with, as when it opened."""
    from router.jobs import opening_message

    opening = message_of({"id": "open1", "text": "charged twice $128.50 for one coffee", "customer": "u"}, START)
    complaint = complaint_of(opening, "payment_amount", "u")
    earlier = _replace(complaint.messages[0], message_id="msg_other", text="any update?",
                       received_at=START - timedelta(minutes=5))
    merged = _replace(complaint, messages=[earlier, *complaint.messages])
    assert complaint.id == "cmp_open1" and opening_message(merged).message_id == "msg_open1"
    created = int(START.timestamp() * 1000)
    pending = decode(pending_fingerprint_of(complaint, created))
    assert completed(pending, opening_message(merged).text) == decode(fingerprint_of(complaint, created))
    assert opening_message(_replace(complaint, id="cmp_made_otherwise", messages=[earlier])).text == "any update?"
    assert opening_message(_replace(complaint, messages=[])) is None
