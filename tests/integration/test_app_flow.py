"""The app channel end to end over the real app and real Redis: intake → worker → queue →
claim → reply → resolve, with idempotency and the errors clients meet."""

from __future__ import annotations

import base64
import re

import pytest

from tests.conftest import ALICE, APP, BOB, SUPERVISOR

pytestmark = pytest.mark.integration

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()


async def submit(client, **body):
    body.setdefault("user_id", "u-1001")
    return await client.post("/v1/messages", json=body, headers=APP)


async def test_message_becomes_a_routed_complaint(client, drain):
    r = await submit(client, text="我被重复扣款了 ¥128.50，交易号 T2026112212345678，请退款", client_message_id="c1")
    assert r.status_code == 202, r.text
    mid = r.json()["message_id"]
    assert r.headers["location"] == f"/v1/messages/{mid}"

    state = (await client.get(f"/v1/messages/{mid}", headers=APP)).json()
    assert state["status"] == "received" and state["complaint_id"] is None

    assert await drain() >= 1
    state = (await client.get(f"/v1/messages/{mid}", headers=APP)).json()
    assert state["status"] == "processed"
    cid = state["complaint_id"]
    assert re.fullmatch(r"C-\d{8}-\d{6}", state["case_number"])

    c = (await client.get(f"/v1/complaints/{cid}", headers=ALICE)).json()
    assert c["category"] == "payment_amount"
    assert c["skill"] == "payments"
    assert c["status"] == "accepted"
    assert c["amount"] == {"value": "128.50", "currency": "CNY"}
    assert c["transaction_id"] == "T2026112212345678"
    assert c["language"] == "zh"
    assert c["channel"] == "app"
    for field in ("id", "case_number", "formal_complaint", "customer_id", "priority", "created_at",
                  "first_response_due", "resolution_due", "messages", "replies", "evidence", "history"):
        assert field in c
    assert c["created_at"].endswith("Z")
    # the acknowledgement went out on the app channel, with the case number, in Chinese
    ack = c["replies"][0]
    assert ack["kind"] == "ack" and c["case_number"] in ack["text"] and "进度" in ack["text"]
    assert ack["delivery"] == "delivered"
    # the acknowledgement went out, so nothing records it as held back
    assert [h["action"] for h in c["history"]] == ["received", "categorised", "routed"]
    received, categorised, routed = (h["detail"] for h in c["history"])
    assert received["message_id"] == mid and received["channel"] == "app"
    assert categorised["category"] == "payment_amount" and routed["skill"] == "payments"

    queues = (await client.get("/v1/queues", headers=SUPERVISOR)).json()["items"]
    payments = next(q for q in queues if q["skill"] == "payments")
    assert payments["depth"] == 1


async def test_claim_reply_resolve_and_the_app_sees_the_answer(client, drain):
    mid = (await submit(client, text="I was charged twice for my coffee, $4.50", language="en")).json()["message_id"]
    await drain()
    claimed = await client.post("/v1/queues/payments/claim", headers=ALICE)
    assert claimed.status_code == 200, claimed.text
    complaint = claimed.json()["complaint"]
    assert complaint["status"] == "in_progress" and complaint["assignee"] == "alice"
    cid = complaint["id"]

    # the queue is empty for the next agent; bob may not answer alice's case
    assert (await client.post("/v1/queues/payments/claim", headers=BOB)).status_code == 204
    r = await client.post(f"/v1/complaints/{cid}/replies", json={"text": "We refunded the duplicate."}, headers=BOB)
    assert r.status_code == 409 and r.json()["code"] == "claimed_by_other"

    r = await client.post(f"/v1/complaints/{cid}/replies", json={"text": "We refunded the duplicate."}, headers=ALICE)
    assert r.status_code == 201, r.text
    assert r.json()["complaint"]["status"] == "responded"
    assert r.json()["complaint"]["first_responded_at"] is not None
    await drain()

    app_view = (await client.get(f"/v1/complaints/{cid}", headers=APP)).json()
    texts = [(x["kind"], x["text"], x["delivery"]) for x in app_view["replies"]]
    assert ("agent", "We refunded the duplicate.", "delivered") in texts
    assert all(h["public"] for h in app_view["history"])
    assert "assignee" not in app_view

    r = await client.post(f"/v1/complaints/{cid}/resolve", json={"outcome": "upheld", "reason": "Duplicate charge refunded"},
                          headers=ALICE)
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    again = await client.post(f"/v1/complaints/{cid}/resolve", json={}, headers=ALICE)
    assert again.status_code == 409
    listed = (await client.get("/v1/complaints", params={"status": "resolved"}, headers=SUPERVISOR)).json()
    assert [c["id"] for c in listed["items"]] == [cid]
    assert mid


async def test_client_message_id_is_an_idempotency_key(client, drain):
    first = await submit(client, text="refund not received", client_message_id="k-1")
    second = await submit(client, text="refund not received", client_message_id="k-1")
    assert first.status_code == second.status_code == 202
    assert first.json()["message_id"] == second.json()["message_id"]
    clash = await submit(client, text="something else", client_message_id="k-1")
    assert clash.status_code == 409 and clash.json()["code"] == "idempotency_key_reused"
    await drain()
    listed = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
    assert len(listed) == 1


async def test_worker_job_run_twice_makes_one_complaint(client, drain, settings):
    from router.pipeline import process_message

    mid = (await submit(client, text="app crashes after the update")).json()["message_id"]
    await drain()
    worker_ctx = {}
    # a replay of the same job, as arq may do after a crash, changes nothing
    from router.store import ComplaintStore
    from plugins.manager import GatewayPlugins
    from router.context import WorkerContext
    from router.services import build_services
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    worker_ctx.update(WorkerContext.of(settings, store, GatewayPlugins(), build_services(settings, store)).job_ctx())
    assert await process_message(worker_ctx, mid) == "already"
    await r.aclose()
    items = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
    assert len(items) == 1 and items[0]["category"] == "function_fault"


async def test_expired_claim_goes_back_to_the_queue(client, drain, settings):
    from msgspec.structs import replace

    from router.store import ComplaintStore

    await submit(client, text="my account is frozen 账户被冻结")
    await drain()
    import redis.asyncio as aioredis

    store = ComplaintStore(settings.redis_prefix)
    r = aioredis.Redis.from_url(settings.redis_url)
    store.bind(r)
    claimed = await store.claim("security", "alice", lease_seconds=0)
    assert claimed is not None
    # the lease has already run out: the next claim finds it back in the queue
    again = await client.post("/v1/queues/security/claim", headers=BOB)
    assert again.status_code == 200 and again.json()["complaint"]["assignee"] == "bob"
    await r.aclose()
    assert replace


async def test_attachment_is_evidence_served_to_allowed_readers(client, drain):
    r = await submit(client, text="screenshot of the double charge",
                     attachments=[{"content_type": "image/png", "data_base64": PNG, "filename": "shot.png"}])
    assert r.status_code == 202, r.text
    await drain()
    cid = (await client.get(f"/v1/messages/{r.json()['message_id']}", headers=APP)).json()["complaint_id"]
    c = (await client.get(f"/v1/complaints/{cid}", headers=ALICE)).json()
    ev = c["evidence"][0]
    assert ev["content_type"] == "image/png"
    got = await client.get(f"/v1/complaints/{cid}/evidence/{ev['id']}", headers=ALICE)
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG")
    assert got.headers["content-type"].startswith("image/png")
    missing = await client.get(f"/v1/complaints/{cid}/evidence/ev_nope", headers=ALICE)
    assert missing.status_code == 404


async def test_agent_records_a_complaint_on_the_phone(client, drain):
    r = await client.post("/v1/complaints", headers=ALICE, json={
        "channel": "phone", "contact": {"kind": "phone", "value": "+8613800138000"},
        "text": "我要投诉：提现手续费太高，要求减免", "language": "zh"})
    assert r.status_code == 202, r.text
    await drain()
    items = (await client.get("/v1/complaints", params={"channel": "phone"}, headers=SUPERVISOR)).json()["items"]
    assert len(items) == 1
    c = items[0]
    assert c["category"] == "fee_dispute" and c["formal_complaint"] is True
    assert c["history"][0]["actor"] == "agent:alice"
    # phone standard: first response within 30 s of the call
    from datetime import datetime

    due = datetime.fromisoformat(c["first_response_due"]) - datetime.fromisoformat(c["created_at"])
    assert due.total_seconds() == 30


@pytest.mark.parametrize(
    "body, status, code, field",
    [
        ({"text": "hi"}, 422, "invalid_field", "user_id"),
        ({"user_id": "u1", "text": 5}, 422, "invalid_field", "text"),
        ({"user_id": "u1", "text": "x", "amount": "12.345"}, 422, "invalid_amount", "amount"),
        ({"user_id": "u1", "text": "x", "amount": "-3"}, 422, "invalid_amount", "amount"),
        ({"user_id": "u1", "text": "x", "amount": "1e5"}, 422, "invalid_amount", "amount"),
        ({"user_id": "u1", "text": "x", "amount": "10", "currency": "XXX"}, 422, "invalid_currency", "currency"),
            ({"user_id": "u1", "text": "x", "surprise": 1}, 422, "invalid_field", "surprise"),
        ({"user_id": "u1", "text": ""}, 422, "text_missing", "text"),
        ({"user_id": "u1", "text": "x" * 8001}, 422, "text_too_long", "text"),
        ({"user_id": "u1", "text": "x", "transaction_id": "bad id!"}, 422, "invalid_transaction_id", "transaction_id"),
        ({"user_id": "u1", "text": "x", "attachments": [{"content_type": "image/png", "data_base64": "!!"}]},
         422, "evidence_bad_encoding", "attachments[0]"),
        ({"user_id": "u1", "text": "x", "attachments": [
            {"content_type": "image/png", "data_base64": base64.b64encode(b"MZ\x90\x00binary").decode()}]},
         422, "evidence_type_not_allowed", "attachments[0]"),
    ],
)
async def test_bad_messages_are_refused_naming_the_field(client, body, status, code, field):
    r = await client.post("/v1/messages", json=body, headers=APP)
    assert r.status_code == status, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == code and problem["status"] == status
    assert problem["field"] == field
    assert {"type", "title", "detail"} <= set(problem)
    listed = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
    assert listed == []


async def test_malformed_json_is_a_400(client):
    r = await client.post("/v1/messages", content=b'{"user_id": "u1", "text": ', headers={**APP, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_json"


async def test_oversized_body_is_a_413(client, settings):
    big = b'{"user_id":"u1","text":"' + b"x" * (settings.max_body_bytes + 10) + b'"}'
    r = await client.post("/v1/messages", content=big, headers={**APP, "content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize(
    "method, path, headers, status",
    [
        ("POST", "/v1/messages", {}, 401),
        ("POST", "/v1/messages", {"Authorization": "Bearer wrong-key-123"}, 401),
        ("POST", "/v1/messages", {"Authorization": "Basic abc"}, 401),
        ("POST", "/v1/messages", ALICE, 403),  # agents do not post as customers
        ("GET", "/v1/complaints", {}, 401),
        ("GET", "/v1/complaints", APP, 403),
        ("GET", "/v1/queues", APP, 403),
        ("POST", "/v1/queues/payments/claim", APP, 403),
        ("GET", "/v1/quarantine", ALICE, 403),
        ("GET", "/v1/messages/msg_x", {}, 401),
    ],
)
async def test_credentials_are_enforced(client, method, path, headers, status):
    r = await client.request(method, path, headers=headers, json={"user_id": "u", "text": "t"})
    assert r.status_code == status, r.text
    assert r.json()["status"] == status


async def test_redis_down_answers_503_and_acknowledges_nothing(settings, tmp_path):
    from litestar.testing import AsyncTestClient
    from msgspec.structs import replace

    from gateway.app import create_app

    dead = replace(settings, redis_url="redis://127.0.0.1:1/0")
    async with AsyncTestClient(app=create_app(dead), raise_server_exceptions=False) as c:
        r = await c.post("/v1/messages", json={"user_id": "u1", "text": "hello"}, headers=APP)
        assert r.status_code == 503
        assert r.json()["code"] == "storage_unavailable"
        assert "retry-after" in r.headers
        ready = await c.get("/ready")
        assert ready.status_code == 503


async def test_health_and_openapi(client):
    assert (await client.get("/health")).json() == {"status": "ok"}
    schema = (await client.get("/schema/openapi.json")).json()
    ops = {op.get("operationId") for p in schema["paths"].values() for op in p.values() if isinstance(op, dict)}
    assert {"submitAppMessage", "getComplaint", "listComplaints", "claimNext", "replyToComplaint",
            "resolveComplaint", "listQueues"} <= ops


async def test_queue_serves_higher_priority_first_then_oldest(client, drain):
    # priority: payment_amount 6, formal complaint 8, balance 3
    texts = ("what's my balance", "charged twice, refund", "我要投诉：重复扣款，退款", "charged twice again, refund")
    for n, text in enumerate(texts):  # four customers (one customer's repeat would join the first case)
        await submit(client, text=text, user_id=f"queue-user-{n}")
    await drain()
    order = []
    while (r := await client.post("/v1/queues/payments/claim", headers=ALICE)).status_code == 200:
        order.append(r.json()["complaint"]["messages"][0]["text"])
    assert order == ["我要投诉：重复扣款，退款", "charged twice, refund", "charged twice again, refund"]
    general = await client.post("/v1/queues/general/claim", headers=ALICE)
    assert general.json()["complaint"]["category"] == "balance_query"


async def test_list_filters_and_pagination(client, drain):
    for n in range(5):
        await submit(client, text=f"app crashes, case {n}", user_id=f"u{n}", phone=f"+861380013800{n}")
    await submit(client, text="my balance please", user_id="u9")
    await drain()
    page1 = (await client.get("/v1/complaints", params={"category": "function_fault", "limit": 3}, headers=SUPERVISOR)).json()
    assert len(page1["items"]) == 3 and page1["next"]
    page2 = (await client.get("/v1/complaints", params={"category": "function_fault", "limit": 3, "next": page1["next"]},
                              headers=SUPERVISOR)).json()
    ids = [c["id"] for c in page1["items"] + page2["items"]]
    assert len(ids) == len(set(ids)) == 5 and page2["next"] is None
    by_contact = (await client.get("/v1/complaints", params={"contact": "phone:+8613800138002"}, headers=SUPERVISOR)).json()
    assert [c["messages"][0]["text"] for c in by_contact["items"]] == ["app crashes, case 2"]
    by_status = (await client.get("/v1/complaints", params={"status": "accepted", "skill": "general"}, headers=SUPERVISOR)).json()
    assert len(by_status["items"]) == 1
    bad = await client.get("/v1/complaints", params={"status": "nonsense"}, headers=SUPERVISOR)
    assert bad.status_code == 400


async def test_an_unknown_category_hint_is_accepted_ignored_and_warned_about(client, drain):
    r = await client.post("/v1/messages", headers=APP, json={
        "user_id": "u-hint", "text": "提现手续费太高，要求减免", "category_hint": "nonsense"})
    assert r.status_code == 202, r.text
    assert [(w["code"], w["field"]) for w in r.json()["warnings"]] == [("category_hint_ignored", "category_hint")]
    await drain()
    cid = (await client.get(f"/v1/messages/{r.json()['message_id']}", headers=APP)).json()["complaint_id"]
    c = (await client.get(f"/v1/complaints/{cid}", headers=SUPERVISOR)).json()
    assert c["category"] == "fee_dispute"  # from the text, as if there were no hint
    ok = await client.post("/v1/messages", headers=APP, json={"user_id": "u-hint2", "text": "x", "category_hint": "other"})
    assert ok.status_code == 202 and ok.json()["warnings"] == []
