"""The agents' workspace in a real browser, against real `gateway serve` and `gateway worker`
processes (one pair for the module) whose Twilio is a local fake: a customer's MMS (a picture and a
voice recording) becomes a case; an agent claims it with the keyboard, sees the evidence inline and a
new message arrive live, corrects the category, answers with a template and resolves it; the
customer's phone (the fake) gets the answer. Two agents never hold the same case."""

from __future__ import annotations

import struct
import time
import uuid
import zlib
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import AGENT_TOKENS, ALICE, SUPERVISOR
from tests import fake_twilio as twilio_fake_module
from tests.fake_twilio import FakeTwilio
from tests.desk import desk_processes, wait_until
from tests.integration.test_console import SHOTS, browser, processed, send, signed_in  # noqa: F401

pytestmark = pytest.mark.integration
SID, TOKEN, DESK_NUMBER = "AC" + "2" * 32, "twilio-auth-token-0002", "+15005550006"
CUSTOMER = "+8613800138000"


def receipt_png(width: int = 240, height: int = 140) -> bytes:
    """A real picture (a receipt's stripes), so the screenshot shows the image inline."""
    rows = b"".join(b"\x00" + b"".join(
        bytes((31, 95, 191)) if y < 22 else bytes((230, 236, 245)) if (y // 14) % 2 else bytes((255, 255, 255))
        for _ in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def fake_twilio():
    fake = FakeTwilio(SID, TOKEN).start()
    placeholder, twilio_fake_module.PNG = twilio_fake_module.PNG, receipt_png()  # the media Twilio serves
    yield fake
    twilio_fake_module.PNG = placeholder
    fake.stop()


@pytest.fixture(scope="module")
def desk(redis_url, tmp_path_factory, fake_twilio):
    with desk_processes(redis_url, tmp_path_factory.mktemp("workspace"), TWILIO_ACCOUNT_SID=SID,
                        TWILIO_AUTH_TOKEN=TOKEN, TWILIO_FROM=DESK_NUMBER, TWILIO_API_BASE=fake_twilio.base) as started:
        yield started


def sms(base: str, body: str, **media: str) -> None:
    """What Twilio posts for an SMS / MMS from the customer, signed as Twilio signs it."""
    sid = "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": SID, "From": CUSTOMER,
              "To": DESK_NUMBER, "Body": body, "NumMedia": str(len(media) // 2), "ApiVersion": "2010-04-01", **media}
    url = f"{base}/webhooks/twilio/sms"
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    r = httpx.post(url, content=urlencode(params), timeout=5, headers={
        "X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text


def sent_to_customer(fake: FakeTwilio, needle: str) -> list[str]:
    return [m["Body"] for m in fake.created_messages() if m["To"] == CUSTOMER and needle in m["Body"]]


def test_an_agent_claims_reads_corrects_answers_and_resolves_a_case(desk, browser, fake_twilio):  # noqa: F811
    base, _logs = desk
    sms(base, "我被重复扣款了128元，截图和语音说明都发给你们了，请尽快退款",
        MediaUrl0=f"{fake_twilio.base}/media/ME{'a' * 32}", MediaContentType0="image/png",
        MediaUrl1=f"{fake_twilio.base}/media/RE{'b' * 32}.mp3", MediaContentType1="audio/mpeg")
    wait_until(lambda: sent_to_customer(fake_twilio, "C-"), timeout=20)  # acknowledged with its case number

    page = signed_in(browser, base, AGENT_TOKENS["alice"], lang="zh")
    page.wait_for_selector("#due-table tr[data-case]")
    assert "工作台" in page.inner_text("header")
    page.screenshot(path=str(SHOTS / "20-agent-worklist-zh.png"))

    page.keyboard.press("n")  # claim the most urgent case
    page.wait_for_selector("#case #lease .countdown")
    cid = page.get_attribute("#case", "data-id")
    page.wait_for_selector(".ev img[src^='blob:']", timeout=20_000)  # the picture, inline
    page.wait_for_selector(".ev audio[src^='blob:']")  # the recording, with a player
    assert "支付金额申诉" in page.inner_text("#case-category")  # the suggested category, in Chinese
    assert "置信度" in page.inner_text("#case-category")
    page.screenshot(path=str(SHOTS / "21-agent-case-claimed-zh.png"))

    # a new message from the customer appears without a reload
    page.evaluate("window.__marker = 'same page'")
    sent = time.monotonic()
    sms(base, "补充：昨天晚上八点被扣了两次128元")  # the same amount: a repeat report, merged
    page.wait_for_selector(".msg.in:has-text('昨天晚上八点')", timeout=10_000)
    arrived = time.monotonic() - sent
    assert page.evaluate("window.__marker") == "same page"
    print(f"a new customer message on the open case showed after {arrived:.2f} s (webhook to screen)")

    # correct the category (the case is re-routed by the rules)
    page.select_option("#correct-category", "transaction")
    page.fill("#correct-reason", "客户说的是重复扣款的交易")
    page.click("#correct-btn")
    page.wait_for_selector("#case-category:has-text('交易问题')")

    # answer with a template, its placeholders filled
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.id") == "reply-text"
    page.select_option("#template", "progress_update")
    page.fill("#template-fields input[data-placeholder='state']", "正在核实您的两笔扣款")
    page.fill("#template-fields input[data-placeholder='next']", "我们将在24小时内答复您。")
    text = page.input_value("#reply-text")
    case_number = page.inner_text("#case-number")
    assert case_number in text and "正在核实您的两笔扣款" in text and "{" not in text
    page.locator("#compose").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "22-agent-reply-template-zh.png"))
    page.focus("#reply-text")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".msg.out.agent:has-text('正在核实您的两笔扣款')")
    wait_until(lambda: sent_to_customer(fake_twilio, "正在核实您的两笔扣款"), timeout=20)  # on the customer's phone

    # resolve with an outcome and a reason
    page.keyboard.press("Escape")
    page.keyboard.press("s")
    assert page.evaluate("document.activeElement.id") == "outcome"
    page.select_option("#outcome", "upheld")
    page.fill("#resolve-reason", "重复扣款的128元已原路退回。")
    page.click("#resolve-btn")
    page.wait_for_selector("#case-head .st-resolved")
    wait_until(lambda: sent_to_customer(fake_twilio, "重复扣款的128元已原路退回"), timeout=20)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "23-agent-resolved-zh.png"))
    complaint = httpx.get(f"{base}/v1/complaints/{cid}", headers=SUPERVISOR).json()
    assert (complaint["status"], complaint["category"], complaint["outcome"]) == ("resolved", "transaction", "upheld")
    assert [e["content_type"] for e in complaint["evidence"]] == ["image/png", "audio/mpeg"]

    # the customer calls: the second charge is still there; the desk reopens the case
    page.fill("#reopen-reason", "客户来电：第二笔扣款仍未退回")
    page.click("#reopen-btn")
    page.wait_for_selector("#case-head .st-reopened")
    wait_until(lambda: sent_to_customer(fake_twilio, "已重新打开"), timeout=20)
    reopened = httpx.get(f"{base}/v1/complaints/{cid}", headers=SUPERVISOR).json()
    assert reopened["reopened_count"] == 1 and reopened["skill"] == "transactions"
    assert any(h["action"] == "reopened" and h["actor"] == "agent:alice" for h in reopened["history"])
    assert httpx.post(f"{base}/v1/complaints/{cid}/resolve", headers=SUPERVISOR, timeout=5, json={
        "outcome": "upheld", "reason": "第二笔已退回", "no_survey": True}).status_code == 200  # the queues empty again
    assert not page.errors, page.errors
    page.context.close()


def test_two_agents_never_hold_the_same_case(desk, browser):  # noqa: F811
    base, _logs = desk
    cid = processed(base, send(base, "two-agents", "The app shows the wrong balance after my top-up"))
    alice = signed_in(browser, base, AGENT_TOKENS["alice"])
    bob = signed_in(browser, base, AGENT_TOKENS["bob"])
    alice.wait_for_selector(f"#due-table tr[data-case='{cid}']")

    alice.click("#claim-next")
    alice.wait_for_selector(f"#case[data-id='{cid}'] #lease .countdown")
    bob.click("#claim-next")  # nothing else waits: Bob gets nothing
    bob.wait_for_selector("#toast.show:has-text('Nothing is waiting')")
    bob.goto(f"{base}/console#/case/{cid}")  # he opens it anyway: he may read, not answer
    bob.wait_for_selector("#not-yours")
    bob.fill("#reply-text", "I'll take this one")
    bob.click("#send-reply")
    bob.wait_for_selector("#toast.show:has-text('claimed_by_other')")
    bob.screenshot(path=str(SHOTS / "24-second-agent-refused.png"))
    assert httpx.post(f"{base}/v1/complaints/{cid}/replies", headers={"Authorization": f"Bearer {AGENT_TOKENS['bob']}"},
                      json={"text": "me too"}, timeout=5).status_code == 409

    # Alice holds it longer, then hands it back with a reason: now Bob can claim it
    before = alice.get_attribute("#lease .countdown", "data-due")
    alice.click("#lease-extend")
    alice.wait_for_selector(f"#lease .countdown:not([data-due='{before}'])")
    alice.screenshot(path=str(SHOTS / "25-agent-lease.png"))
    alice.fill("#handback-reason", "needs the payments team")
    alice.click("#lease-handback")
    alice.wait_for_selector("#lease", state="detached")
    bob.click("nav a[data-nav='work']")
    bob.click("#claim-next")
    bob.wait_for_selector(f"#case[data-id='{cid}'] #lease .countdown")
    held = httpx.get(f"{base}/v1/complaints/{cid}", headers=SUPERVISOR).json()
    assert held["assignee"] == "bob" and "handed_back" in held["tags"]
    assert any(h["action"] == "handed_back" and h["detail"].get("reason") == "needs the payments team"
               for h in held["history"])
    # the hold is an agent's own: Alice cannot release Bob's
    r = httpx.post(f"{base}/v1/console/cases/{cid}/lease/release", headers=ALICE, timeout=5)
    assert r.status_code == 409 and r.json()["code"] == "not_your_lease"
    assert not alice.errors and not bob.errors, (alice.errors, bob.errors)

