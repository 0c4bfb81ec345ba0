"""One customer, one case: identity across channels, repeat reports merged (and split again),
incidents formed and answered, personal data masked where it is not needed."""

from __future__ import annotations

import io
import logging

import pytest
import redis.asyncio
from msgspec.structs import replace

from plugins.hookspecs import hookimpl
from router.repeats import decode
from router.store import Keys
from tests.conftest import ALICE, APP, SUPERVISOR, gateway_client, run_worker, app_plugins

pytestmark = pytest.mark.integration


class Listener:
    """A complaint-event listener that does not declare needs_personal_data."""

    def __init__(self, needs=False):
        self.needs_personal_data = needs
        self.seen = []

    @hookimpl
    def complaint_event(self, event, complaint):
        self.seen.append(" ".join(m.text for m in complaint.messages) + " " + complaint.contact.value)


@pytest.fixture
def desk(settings):
    """(settings, plugins): incidents from 5 customers, so the tests stay small."""
    return replace(settings, incident_min_customers=5), app_plugins()


@pytest.fixture
async def client(desk):
    async with gateway_client(*desk) as c:
        yield c


async def drain(desk):
    await run_worker(*desk)


async def send(client, user, text, **extra):
    r = await client.post("/v1/messages", json={"user_id": user, "text": text, **extra}, headers=APP)
    assert r.status_code == 202, r.text
    return r.json()["message_id"]


async def complaint_of(client, mid):
    state = (await client.get(f"/v1/messages/{mid}", headers=APP)).json()
    return (await client.get(f"/v1/complaints/{state['complaint_id']}", headers=SUPERVISOR)).json()


# -- identity ---------------------------------------------------------------------------------


async def test_the_apps_profile_links_phone_and_email_and_the_phone_call_joins(client, desk):
    mid = await send(client, "u-identity-1", "我的余额不对", phone="138 0013 8000", email="Li.Lei@Example.COM")
    await drain(desk)
    first = await complaint_of(client, mid)
    # the customer phones later: the agent types the number as the customer says it
    r = await client.post("/v1/complaints", json={"contact": {"kind": "phone", "value": "+86 138-0013-8000"},
                                                 "text": "提现一直没到账", "channel": "phone"}, headers=ALICE)
    assert r.status_code == 202
    await drain(desk)
    second = await complaint_of(client, r.json()["message_id"])
    assert second["customer_id"] == first["customer_id"]
    customer = second["customer"]
    assert {(c["kind"], c["value"]) for c in customer["contacts"]} == {
        ("app_user", "u-identity-1"), ("phone", "+8613800138000"), ("email", "li.lei@example.com")}
    assert {c["case_number"] for c in customer["open_cases"]} == {first["case_number"], second["case_number"]}
    view = (await client.get(f"/v1/customers/{first['customer_id']}", headers=ALICE)).json()
    assert [h["action"] for h in view["history"]] == ["linked", "linked", "linked"]
    assert any("vouched by app" in h["reason"] for h in view["history"])


async def test_a_phone_seen_first_is_adopted_by_the_app_user_who_vouches_for_it(client, desk):
    r = await client.post("/v1/complaints", json={"contact": {"kind": "phone", "value": "13900139000"},
                                                 "text": "转账失败", "channel": "phone"}, headers=ALICE)
    await drain(desk)
    by_phone = await complaint_of(client, r.json()["message_id"])
    mid = await send(client, "u-identity-2", "my balance is wrong", phone="+8613900139000")
    await drain(desk)
    assert (await complaint_of(client, mid))["customer_id"] == by_phone["customer_id"]


async def test_agents_link_move_and_unlink_contacts_with_history(client, desk):
    await send(client, "u-link-a", "fee too high")
    await send(client, "u-link-b", "app crashes")
    await drain(desk)
    a_customer, b_customer = [
        (await client.get("/v1/complaints", params={"contact": f"app_user:{u}"}, headers=SUPERVISOR)
         ).json()["items"][0]["customer_id"] for u in ("u-link-a", "u-link-b")]
    link = {"kind": "phone", "value": "13700137000", "reason": "customer told us on the phone"}
    r = await client.post(f"/v1/customers/{a_customer}/contacts", json=link, headers=ALICE)
    assert r.status_code == 201 and r.json()["status"] == "linked"
    r = await client.post(f"/v1/customers/{b_customer}/contacts", json=link, headers=ALICE)
    assert r.status_code == 409 and r.json()["code"] == "contact_linked_elsewhere"
    r = await client.post(f"/v1/customers/{b_customer}/contacts", json={**link, "move": True}, headers=ALICE)
    assert r.status_code == 201 and r.json()["moved_from"] == a_customer
    a_view = (await client.get(f"/v1/customers/{a_customer}", headers=ALICE)).json()
    assert [h["action"] for h in a_view["history"]][-2:] == ["linked", "moved_away"]
    assert ("phone", "+8613700137000") not in {(c["kind"], c["value"]) for c in a_view["contacts"]}
    r = await client.delete(f"/v1/customers/{b_customer}/contacts/phone:%2B8613700137000",
                            params={"reason": "wrong number"}, headers=ALICE)
    assert r.status_code == 200 and r.json()["history"][-1]["action"] == "unlinked"
    r = await client.post(f"/v1/customers/{b_customer}/contacts", json={"kind": "phone", "value": "12",
                                                                        "reason": "x"}, headers=ALICE)
    assert r.status_code == 422
    assert (await client.get("/v1/customers/cus_nobody", headers=ALICE)).status_code == 404
    assert (await client.get(f"/v1/customers/{a_customer}", headers=APP)).status_code == 403


# -- repeat reports ---------------------------------------------------------------------------


@pytest.mark.parametrize("first, second, reason", [
    ("交易号 T2026112300000001 被重复扣款", "T2026112300000001 这笔还没退款，请尽快处理", "same_transaction"),
    ("I was charged twice: $128.50 for one coffee", "Still waiting for my refund of $128.50, charged twice!",
     "same_amount"),
    ("app闪退打不开，更新以后无法使用", "app闪退打不开，更新以后无法使用！！！", "similar_text"),
    ("The app keeps crashing whenever I open it", "the app keeps crashing whenever I open it. Fix it", "similar_text"),
])
async def test_a_repeat_joins_the_open_case(client, desk, first, second, reason):
    user = f"u-rep-{reason}-{len(first)}"
    m1 = await send(client, user, first)
    await drain(desk)
    before = await complaint_of(client, m1)
    # the case opened with a pending fingerprint: what its text gives is read when a repeat comes
    settings = desk[0]
    r = redis.asyncio.from_url(settings.redis_url)
    try:
        stored = await r.hget(Keys(settings.redis_prefix).open_cases(before["customer_id"]), before["id"])
    finally:
        await r.aclose()
    assert decode(stored).pending
    m2 = await send(client, user, second)
    await drain(desk)
    after = await complaint_of(client, m2)
    assert after["id"] == before["id"] and after["repeat_count"] == 1
    assert after["merges"][0]["reason"] == reason and after["merges"][0]["message_id"] == m2
    assert [m["message_id"] for m in after["messages"]] == [m1, m2]
    assert after["priority"] == before["priority"] + 1
    repeat_ack = next(r for r in after["replies"] if r["kind"] == "repeat_ack")
    assert before["case_number"] in repeat_ack["text"]
    assert any(h["action"] == "merged" and h["detail"]["reason"] == reason for h in after["history"])
    # the app sees its message went to the existing case
    assert (await client.get(f"/v1/messages/{m2}", headers=APP)).json()["complaint_id"] == before["id"]


@pytest.mark.parametrize("first, second, other_user", [
    ("交易号 T2026112300000001 重复扣款，请退款", "交易号 T2026112300000002 重复扣款，请退款", False),
    ("charged twice $128.50, please refund", "charged twice $99.00, please refund", False),
    ("app闪退打不开，更新以后无法使用", "app闪退打不开，更新以后无法使用", True),  # same words, someone else
    ("I was charged twice, refund please", "I was charged twice, refund please", True),
])
async def test_hard_negatives_stay_separate(client, desk, first, second, other_user):
    user = f"u-neg-{len(first)}-{other_user}"
    m1 = await send(client, user, first)
    await drain(desk)
    m2 = await send(client, user + ("-other" if other_user else ""), second)
    await drain(desk)
    a, b = await complaint_of(client, m1), await complaint_of(client, m2)
    assert a["id"] != b["id"] and a["repeat_count"] == b["repeat_count"] == 0


async def test_a_repeat_on_another_channel_is_answered_there_and_can_be_split(client, desk):
    m1 = await send(client, "u-split", "交易号 T2026112300000077 扣款两次", phone="13600136000")
    await drain(desk)
    case = await complaint_of(client, m1)
    r = await client.post("/v1/complaints", json={"contact": {"kind": "phone", "value": "13600136000"},
                                                 "text": "我打电话问 T2026112300000077 的退款", "channel": "phone"},
                          headers=ALICE)
    await drain(desk)
    m2 = r.json()["message_id"]
    merged = await complaint_of(client, m2)
    assert merged["id"] == case["id"]
    repeat_ack = next(r for r in merged["replies"] if r["kind"] == "repeat_ack")
    assert repeat_ack["channel"] == "phone" and repeat_ack["to"]["value"] == "+8613600136000"
    # the agent decides it is another problem after all
    r = await client.post(f"/v1/complaints/{case['id']}/split", json={"message_id": m2, "reason": "different refund"},
                          headers=ALICE)
    assert r.status_code == 202, r.text
    await drain(desk)
    original = (await client.get(f"/v1/complaints/{case['id']}", headers=SUPERVISOR)).json()
    assert original["repeat_count"] == 0 and [m["message_id"] for m in original["messages"]] == [m1]
    assert original["merges"][0]["split"] is True and original["merges"][0]["split_reason"] == "different refund"
    own = await complaint_of(client, m2)
    assert own["id"] != case["id"] and own["messages"][0]["message_id"] == m2
    r = await client.post(f"/v1/complaints/{case['id']}/split", json={"message_id": m2, "reason": "again"},
                          headers=ALICE)
    assert r.status_code == 409


async def test_a_closed_case_is_not_merged_into_after_the_reopen_window(settings):
    desk = (replace(settings, reopen_window_hours=0), app_plugins())
    async with gateway_client(*desk) as client:
        m1 = await send(client, "u-closed", "交易号 T2026112300000088 扣款两次")
        await drain(desk)
        case = await complaint_of(client, m1)
        await client.post(f"/v1/complaints/{case['id']}/resolve", json={"outcome": "upheld"}, headers=ALICE)
        m2 = await send(client, "u-closed", "交易号 T2026112300000088 又扣了一次")
        await drain(desk)
        assert (await complaint_of(client, m2))["id"] != case["id"]


# -- incidents --------------------------------------------------------------------------------

CRASH_REPORTS = ["app crashes when I pay", "付款时app闪退", "The app crashed while paying!", "支付的时候应用崩溃了",
                 "APP 一付款就闪退", "my app crashes on the payment screen"]


async def test_many_customers_one_fault_form_an_incident_answered_at_once(client, desk):
    for n, text in enumerate(CRASH_REPORTS[:5]):
        await send(client, f"u-inc-{n}", text)
    await send(client, "u-inc-x", "withdrawal fee too high")  # another fault
    await drain(desk)
    (incident,) = (await client.get("/v1/incidents", headers=SUPERVISOR)).json()["items"]
    assert incident["category"] == "function_fault" and incident["complaint_count"] == 5
    detail = (await client.get(f"/v1/incidents/{incident['id']}", headers=ALICE)).json()
    assert len({c["customer_id"] for c in detail["complaints"]}) == 5
    r = await client.post(f"/v1/incidents/{incident['id']}/answer", headers=SUPERVISOR, json={
        "zh": "支付页面闪退是已知故障，已在 5.2.1 版本修复，请更新。", "en": "The payment crash is fixed in 5.2.1; please update."})
    assert r.status_code == 200 and r.json()["answered"] == 5
    await drain(desk)
    for c in detail["complaints"]:
        full = (await client.get(f"/v1/complaints/{c['id']}", headers=SUPERVISOR)).json()
        answer = next(r for r in full["replies"] if r["kind"] == "agent")
        assert ("5.2.1" in answer["text"]) and (("修复" in answer["text"]) == (full["language"] == "zh"))
        assert full["status"] == "responded" and full["incident_id"] == incident["id"]
    # a sixth customer reports it after the answer: joins and gets the answer at once
    late = await send(client, "u-inc-late", CRASH_REPORTS[5])
    await drain(desk)
    full = await complaint_of(client, late)
    assert full["incident_id"] == incident["id"] and any(r["kind"] == "agent" for r in full["replies"])
    assert (await client.post(f"/v1/incidents/{incident['id']}/answer", headers=ALICE,
                              json={"en": "x"})).status_code == 403


async def test_different_faults_form_no_incident(client, desk):
    for n, text in enumerate(["app crashes when I pay", "cannot log in to the app", "转账失败了", "提现手续费太高",
                              "my balance is wrong", "password reset does not work"]):
        await send(client, f"u-noinc-{n}", text)
    await drain(desk)
    assert (await client.get("/v1/incidents", headers=SUPERVISOR)).json()["items"] == []


# -- privacy ----------------------------------------------------------------------------------

PII_TEXT = ("卡号 6222 0212 3456 7890 128 被盗刷了，身份证 11010519491231002X，电话 13800138000，"
            "邮箱 li.lei@example.com，交易号 T2026112300000099")
PII_VALUES = ["6222 0212 3456 7890 128", "11010519491231002X", "13800138000", "li.lei@example.com"]


async def test_personal_data_is_masked_in_lists_for_other_roles_and_for_plugins(settings):
    quiet, trusted = Listener(), Listener(needs=True)
    plugins = app_plugins(quiet, trusted)
    desk = (replace(settings, pii_roles=("supervisor",)), plugins)
    async with gateway_client(*desk) as client:
        mid = await send(client, "u-pii", PII_TEXT)
        await drain(desk)
        full = await complaint_of(client, mid)
        assert full["messages"][0]["text"] == PII_TEXT  # the supervisor sees what the case needs
        listed = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"][0]
        as_agent = (await client.get(f"/v1/complaints/{full['id']}", headers=ALICE)).json()
        for view in (listed, as_agent):
            text = view["messages"][0]["text"]
            assert not any(v in text for v in PII_VALUES), text
            assert "T2026112300000099" in text and "[card ···0128]" in text  # what the case needs stays
    assert quiet.seen and not any(v in s for s in quiet.seen for v in PII_VALUES)
    assert any("13800138000" in s for s in trusted.seen)


async def test_no_personal_data_reaches_the_logs(settings):
    from gateway.cli import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("DEBUG")  # what `gateway serve` / `gateway worker` do
    stream = io.StringIO()
    root.handlers[0].setStream(stream)
    try:
        plugins = app_plugins(Listener())
        desk = (settings, plugins)
        async with gateway_client(*desk) as client:
            mid = await send(client, "u-pii-log", PII_TEXT, phone="13800138000", email="li.lei@example.com")
            await send(client, "u-pii-log", PII_TEXT + " again", phone="13800138000")
            await drain(desk)
            await complaint_of(client, mid)
            logging.getLogger("gateway.test").info("customer wrote: %s", PII_TEXT)
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    err = stream.getvalue()
    assert "customer wrote" in err  # the logs were captured
    for value in PII_VALUES + ["+8613800138000"]:
        assert value not in err, value


async def test_logs_are_json_lines_with_case_numbers_and_no_personal_data(settings):
    import json as jsonlib

    from gateway.cli import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("INFO", "json")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)
    try:
        desk = (settings, app_plugins())
        async with gateway_client(*desk) as client:
            mid = await send(client, "u-json-log", PII_TEXT)
            await drain(desk)
            case = await complaint_of(client, mid)
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    lines = [jsonlib.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    opened = [line for line in lines if line.get("case_number") == case["case_number"]]
    assert opened and opened[0]["message_id"] == mid
    for value in PII_VALUES:
        assert value not in stream.getvalue()


async def test_a_complaint_joins_its_incident_without_being_rewritten(client, desk, redis_url):
    """In an outage every new complaint joins an incident: the link is written with the joining
    (or the forming) beside the complaint, not by rewriting it. Every read shows it; the next change
    of the complaint takes it in, once, in time order."""
    from datetime import datetime

    from redis.asyncio import Redis

    from router.store import ComplaintStore, decode_complaint

    keys = ComplaintStore(desk[0].redis_prefix).keys
    r = Redis.from_url(redis_url)

    def in_time_order(history):
        ats = [datetime.fromisoformat(e["at"]) if isinstance(e["at"], str) else e["at"] for e in history]
        return ats == sorted(ats)

    try:
        mids = [await send(client, f"u-link-{n}", text) for n, text in enumerate(CRASH_REPORTS)]  # 5 form, 1 joins
        await drain(desk)
        (incident,) = (await client.get("/v1/incidents", headers=SUPERVISOR)).json()["items"]
        assert incident["complaint_count"] == 6
        seen = []
        for mid in mids:
            c = await complaint_of(client, mid)
            assert c["incident_id"] == incident["id"] and "incident" in c["tags"]
            assert [e["action"] for e in c["history"]].count("incident_linked") == 1 and in_time_order(c["history"])
            assert decode_complaint(await r.get(keys.complaint(c["id"]))).incident_id is None  # not rewritten
            seen.append(c)
        last = seen[-1]
        resolved = await client.post(f"/v1/complaints/{last['id']}/resolve", json={"outcome": "upheld"}, headers=ALICE)
        assert resolved.status_code == 200, resolved.text
        stored = decode_complaint(await r.get(keys.complaint(last["id"])))
        assert stored.incident_id == incident["id"] and "incident" in stored.tags
        assert [e.action for e in stored.history].count("incident_linked") == 1
        assert in_time_order([{"at": e.at} for e in stored.history])
        again = (await client.get(f"/v1/complaints/{last['id']}", headers=SUPERVISOR)).json()
        assert [e["action"] for e in again["history"]].count("incident_linked") == 1
        assert again["incident_id"] == incident["id"] and again["status"] == "resolved"
    finally:
        await r.aclose()
