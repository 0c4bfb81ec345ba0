"""WhatsApp, Messenger and Instagram through Meta's webhooks: the payloads Meta posts, signed as
Meta signs them (HMAC-SHA256 of the raw body with the app secret); replies through the Graph API
shape to a local fake."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import pytest

from adapters.meta import MetaChannel, MetaSettings
from plugins.manager import GatewayPlugins
from tests.conftest import SUPERVISOR, gateway_client, run_worker, stored_keys, list_complaints
from tests.fake_api import FakeApi

pytestmark = pytest.mark.integration

SECRET, VERIFY, WA_TOKEN, PAGE_TOKEN = "meta-app-secret-1", "verify-me-1", "wa-token-1", "page-token-1"
PNID, WABA, PAGE, IG = "106540352242922", "102290129340398", "1122334455", "17841400000000"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def graph_fake() -> FakeApi:
    """The Graph API. WhatsApp media URLs point at the fake itself, or at ``fake.media_base`` once
    set (a media host of its own: a fault proxy in front of this fake)."""
    fake = FakeApi()
    fake.media_base = None

    def wa_send(call, match):
        if call.headers.get("Authorization") != f"Bearer {WA_TOKEN}":
            return 401, {"error": {"message": "Invalid OAuth access token", "type": "OAuthException", "code": 190}}, \
                "application/json"
        body = call.json()
        return 200, {"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                     "messages": [{"id": "wamid.OUT" + uuid.uuid4().hex}]}, "application/json"

    def page_send(call, match):
        if call.headers.get("Authorization") != f"Bearer {PAGE_TOKEN}":
            return 401, {"error": {"code": 190}}, "application/json"
        return 200, {"recipient_id": call.json()["recipient"]["id"], "message_id": "m_OUT" + uuid.uuid4().hex}, \
            "application/json"

    def media_info(call, match):
        return 200, {"messaging_product": "whatsapp", "url": f"{fake.media_base or fake.base}/lookaside/{match.group(1)}",
                     "mime_type": "image/png", "sha256": hashlib.sha256(PNG).hexdigest(), "file_size": len(PNG),
                     "id": match.group(1)}, "application/json"

    def media_bytes(call, match):
        if call.headers.get("Authorization") != f"Bearer {WA_TOKEN}":
            return 401, b"", "text/plain"
        return 200, PNG, "image/png"

    fake.route("POST", rf"/v21.0/{PNID}/messages", wa_send)
    fake.route("POST", r"/v21.0/me/messages", page_send)
    fake.route("GET", r"/v21.0/(\d+)", media_info)
    fake.route("GET", r"/lookaside/(\d+)", media_bytes)
    fake.route("GET", r"/cdn/(\w+)", lambda call, m: (200, PNG, "image/png"))
    return fake.start()


@pytest.fixture
def graph():
    fake = graph_fake()
    yield fake
    fake.stop()


@pytest.fixture
def meta_plugins(graph):
    plugins = GatewayPlugins()
    plugins.register("meta", MetaChannel(MetaSettings(
        app_secret=SECRET, verify_token=VERIFY, whatsapp_token=WA_TOKEN, whatsapp_phone_number_id=PNID,
        whatsapp_template="case_update", page_token=PAGE_TOKEN, graph_base=graph.base)))
    plugins.check()
    return plugins


@pytest.fixture
async def client(settings, meta_plugins):
    async with gateway_client(settings, meta_plugins) as c:
        yield c


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json", "User-Agent": "facebookexternalua"}


async def post_meta(client, payload, headers=None):
    body = json.dumps(payload, ensure_ascii=False).encode() if not isinstance(payload, bytes) else payload
    return await client.post("/webhooks/meta", content=body, headers=headers or sign(body))


def wa_payload(*messages, statuses=(), wa_id="8613800138000", name="李雷"):
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550783881", "phone_number_id": PNID}}
    if messages:
        value["contacts"] = [{"profile": {"name": name}, "wa_id": wa_id}]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {"object": "whatsapp_business_account",
            "entry": [{"id": WABA, "changes": [{"value": value, "field": "messages"}]}]}


def wa_text(text, wamid=None, wa_id="8613800138000", ts=None):
    return {"from": wa_id, "id": wamid or "wamid.HBgN" + uuid.uuid4().hex, "timestamp": str(ts or int(time.time())),
            "text": {"body": text}, "type": "text"}


def wa_status(wamid, status, wa_id="8613800138000"):
    item = {"id": wamid, "status": status, "timestamp": str(int(time.time())), "recipient_id": wa_id}
    if status != "read":
        item["conversation"] = {"id": "CONVERSATION_ID", "origin": {"type": "service"}}
        item["pricing"] = {"billable": False, "pricing_model": "PMP", "category": "service"}
    if status == "failed":
        item["errors"] = [{"code": 131026, "title": "Message undeliverable"}]
    return item


def page_event(channel, sender, text=None, mid=None, attachments=None, **extra):
    recipient = PAGE if channel == "page" else IG
    message = {"mid": mid or "m_" + uuid.uuid4().hex}
    if text is not None:
        message["text"] = text
    if attachments:
        message["attachments"] = attachments
    event = {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": int(time.time() * 1000)}
    event.update(extra or {"message": message})
    return {"id": recipient, "time": int(time.time() * 1000), "messaging": [event]}


async def test_subscription_handshake(client):
    q = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}
    r = await client.get("/webhooks/meta", params=q)
    assert r.status_code == 200 and r.text == "1158201444"
    r = await client.get("/webhooks/meta", params={**q, "hub.verify_token": "guess"})
    assert r.status_code == 403 and r.json()["code"] == "verify_token_invalid"


async def test_whatsapp_text_becomes_one_complaint_however_often_meta_retries(client, settings, meta_plugins, graph):
    payload = wa_payload(wa_text("我被重复扣款了128元，订单号 T20261123001，请退款"))
    for _ in range(5):
        r = await post_meta(client, payload)
        assert r.status_code == 200, r.text
    await run_worker(settings, meta_plugins)
    (c,) = await list_complaints(client)
    assert (c["channel"], c["contact"]["kind"], c["contact"]["value"]) == ("whatsapp", "wa_id", "8613800138000")
    assert c["contact"]["display_name"] == "李雷" and c["language"] == "zh"
    # the acknowledgement went out as free text (the customer wrote just now) through the Graph API
    (sent,) = graph.posts_to(rf"/{PNID}/messages")
    body = sent.json()
    assert body["type"] == "text" and body["to"] == "8613800138000" and c["case_number"] in body["text"]["body"]
    assert sent.headers["Authorization"] == f"Bearer {WA_TOKEN}"


async def test_whatsapp_statuses_move_our_reply_forward_only(client, settings, meta_plugins, graph):
    await post_meta(client, wa_payload(wa_text("payment failed but money was taken")))
    await run_worker(settings, meta_plugins)
    (c,) = await list_complaints(client)
    out_id = c["replies"][0]["provider_message_id"]
    assert out_id.startswith("wamid.OUT") and c["replies"][0]["delivery"] == "sent"
    for status in ("delivered", "read", "sent", "delivered"):  # late and out of order
        r = await post_meta(client, wa_payload(statuses=[wa_status(out_id, status)]))
        assert r.status_code == 200
    (c,) = await list_complaints(client)
    assert c["replies"][0]["delivery"] == "read" and c["replies"][0]["delivered_at"]
    assert len(await list_complaints(client)) == 1  # statuses never become complaints


async def test_whatsapp_media_is_fetched_by_the_worker_with_the_token(client, settings, meta_plugins, graph):
    image = {"from": "8613800138001", "id": "wamid.IMG" + uuid.uuid4().hex, "timestamp": str(int(time.time())),
             "type": "image", "image": {"caption": "扣款截图", "mime_type": "image/jpeg",
                                        "sha256": "abc", "id": "1234567890"}}
    document = {"from": "8613800138001", "id": "wamid.DOC" + uuid.uuid4().hex, "timestamp": str(int(time.time())),
                "type": "document", "document": {"caption": "receipt", "filename": "receipt.pdf",
                                                 "mime_type": "application/pdf", "sha256": "def", "id": "2234567890"}}
    r = await post_meta(client, wa_payload(image, document, wa_id="8613800138001"))
    assert r.status_code == 200 and not [c for c in graph.calls if c.method == "GET"]  # nothing fetched yet
    await run_worker(settings, meta_plugins)
    items = await list_complaints(client)
    evidence = [e for c in items for e in c["evidence"]]
    assert len(evidence) == 2 and {(e["content_type"], e["state"]) for e in evidence} == {("image/png", "stored")}
    fetches = [c for c in graph.calls if c.method == "GET" and c.path.startswith("/lookaside/")]
    assert len(fetches) == 2 and all(c.headers["Authorization"] == f"Bearer {WA_TOKEN}" for c in fetches)


async def test_outside_the_24_hour_window_whatsapp_gets_the_template(client, settings, meta_plugins, graph):
    old = int(time.time()) - 25 * 3600  # a message Meta delivers a day late (it retries for days)
    await post_meta(client, wa_payload(wa_text("Refund never arrived for order T88", ts=old), wa_id="447700900123"))
    await run_worker(settings, meta_plugins)
    (c,) = await list_complaints(client)
    (sent,) = graph.posts_to(rf"/{PNID}/messages")
    body = sent.json()
    assert body["type"] == "template" and body["template"]["name"] == "case_update"
    assert body["template"]["language"]["code"] == "en_US"
    assert body["template"]["components"][0]["parameters"][0]["text"] == c["case_number"]


async def test_mixed_batch_takes_the_good_entries_and_quarantines_the_bad(client, settings, meta_plugins, graph):
    good1 = page_event("page", "6543210987654321", "我的提现一直没有到账")
    good2 = page_event("page", "6543210987654322", "Card was charged twice",
                       attachments=[{"type": "image", "payload": {"url": f"{graph.base}/cdn/abc"}}])
    bad = {"id": PAGE, "time": 1, "messaging": [{"recipient": {"id": PAGE}, "message": {"text": "no sender"}}]}
    payload = {"object": "page", "entry": [good1, bad, good2]}
    for _ in range(2):
        r = await post_meta(client, payload)
        assert r.status_code == 200 and r.json()["accepted"] == 2
    await run_worker(settings, meta_plugins)
    items = await list_complaints(client)
    assert sorted(c["contact"]["value"] for c in items) == ["6543210987654321", "6543210987654322"]
    assert {c["channel"] for c in items} == {"messenger"} and {c["contact"]["kind"] for c in items} == {"psid"}
    assert sum(len(c["evidence"]) for c in items) == 1
    quarantined = (await client.get("/v1/quarantine", headers=SUPERVISOR)).json()["items"]
    assert len(quarantined) == 1 and "sender.id" in quarantined[0]["reason"]  # once, though posted twice
    sends = graph.posts_to(r"/me/messages")
    assert len(sends) == 2 and all(s.json()["messaging_type"] == "RESPONSE" for s in sends)


async def test_instagram_and_messenger_receipts(client, settings, meta_plugins, graph):
    await post_meta(client, {"object": "instagram", "entry": [page_event("instagram", "17841499999", "app 闪退，无法付款")]})
    await post_meta(client, {"object": "page", "entry": [page_event("page", "555", "refund please")]})
    await run_worker(settings, meta_plugins)
    items = {c["channel"]: c for c in await list_complaints(client)}
    assert items["instagram"]["contact"]["kind"] == "igsid"
    ig_out = items["instagram"]["replies"][0]["provider_message_id"]
    # Instagram names the message it read; Messenger says "everything up to this time"
    await post_meta(client, {"object": "instagram", "entry": [page_event(
        "instagram", "17841499999", read={"mid": ig_out})]})
    await post_meta(client, {"object": "page", "entry": [page_event(
        "page", "555", delivery={"mids": [items["messenger"]["replies"][0]["provider_message_id"]],
                                 "watermark": int(time.time() * 1000)})]})
    await post_meta(client, {"object": "page", "entry": [page_event(
        "page", "555", read={"watermark": int(time.time() * 1000) + 1000})]})
    items = {c["channel"]: c for c in await list_complaints(client)}
    assert items["instagram"]["replies"][0]["delivery"] == "read"
    assert items["messenger"]["replies"][0]["delivery"] == "read"
    # our own messages echoed back are not complaints
    await post_meta(client, {"object": "page", "entry": [page_event(
        "page", PAGE, message={"mid": "m_echo", "is_echo": True, "text": "ack"})]})
    await run_worker(settings, meta_plugins)
    assert len(await list_complaints(client)) == 2


@pytest.mark.parametrize("case", ["unsigned", "forged", "tampered", "other_secret"])
async def test_forged_tampered_and_unsigned_are_refused_with_nothing_stored(client, settings, case):
    body = json.dumps(wa_payload(wa_text("hello"))).encode()
    headers = {"unsigned": {"Content-Type": "application/json"},
               "forged": {"X-Hub-Signature-256": "sha256=" + "0" * 64},
               "tampered": sign(body),
               "other_secret": sign(body, "not-the-secret")}[case]
    if case == "tampered":
        body = body.replace(b"hello", b"HELLO")
    before = await stored_keys(settings)
    r = await client.post("/webhooks/meta", content=body, headers=headers)
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert await stored_keys(settings) == before


async def test_huge_and_broken_bodies(client, settings):
    r = await client.post("/webhooks/meta", content=b"{" * 2_000_000, headers=sign(b"x"))
    assert r.status_code == 413
    broken = b'{"object": "page", "entry": [tru'
    r = await post_meta(client, broken)
    assert r.status_code == 200  # signed by Meta: kept for a person, not retried for days
    (item,) = (await client.get("/v1/quarantine", headers=SUPERVISOR)).json()["items"]
    assert item["channel"] == "meta"
