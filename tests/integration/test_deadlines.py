"""Deadlines the customer can feel: first-response and resolution clocks on a controllable clock
(real time + an offset in Redis that every process reads), warnings, the escalation chain, pause
and stop rules, a worker killed with timers pending, status questions, outcomes, the survey,
reopening, templates and the service report."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis.asyncio as aioredis
from msgspec.structs import replace

from adapters.notify_webhook import NotifySettings, NotifyWebhook
from router.worker import create_worker
from tests.conftest import ALICE, APP, ROOT, SUPERVISOR, app_plugins, eventually, gateway_client, make_env

pytestmark = pytest.mark.integration


@pytest.fixture
def clocked(settings):
    return replace(settings, test_clock=True)


class Desk:
    """The app, a worker running in the background (not burst: its timer loop keeps going),
    and the test clock."""

    def __init__(self, settings, plugins, client):
        self.settings, self.plugins, self.client = settings, plugins, client
        self.redis = aioredis.from_url(settings.redis_url)

    async def start(self):
        self.worker = create_worker(self.settings, burst=False, handle_signals=False, plugins=self.plugins)
        self.task = asyncio.create_task(self.worker.main())

    async def stop(self):
        # let running jobs finish (a job cancelled mid-way makes close() raise), then stop
        await asyncio.wait_for(asyncio.gather(*self.worker.tasks.values(), return_exceptions=True), 10)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await asyncio.gather(self.worker.close(), return_exceptions=True)
        await self.redis.aclose()

    async def advance(self, seconds):
        await self.redis.incrby(self.settings.redis_prefix + "clock:offset", int(seconds * 1000))

    async def advance_to(self, iso, past_ms=20):
        """Move the clock to just after ``iso``."""
        offset = int(await self.redis.get(self.settings.redis_prefix + "clock:offset") or 0)
        now_ms = time.time() * 1000 + offset
        await self.advance((_ts(iso) * 1000 + past_ms - now_ms) / 1000)

    async def send(self, text, user="u-deadline", **extra):
        r = await self.client.post("/v1/messages", json={"user_id": user, "text": text, **extra}, headers=APP)
        assert r.status_code == 202, r.text
        return r.json()["message_id"]

    async def complaint(self, mid=None, cid=None):
        if cid is None:
            async def known():
                state = (await self.client.get(f"/v1/messages/{mid}", headers=APP)).json()
                return state["complaint_id"]
            cid = await eventually(known)
        return (await self.client.get(f"/v1/complaints/{cid}", headers=SUPERVISOR)).json()


@pytest.fixture
async def desk(clocked):
    plugins = app_plugins()
    async with gateway_client(clocked, plugins) as client:
        d = Desk(clocked, plugins, client)
        await d.start()
        yield d
        await d.stop()


def actions(c, name):
    return [h for h in c["history"] if h["action"] == name]


def deadline(c, kind):
    return next(d for d in c["deadlines"] if d["kind"] == kind)


async def test_first_response_warns_breaches_and_escalates_level_by_level(desk):
    mid = await desk.send("提现一直没到账")
    c = await desk.complaint(mid)
    fr = deadline(c, "first_response")
    assert fr["state"] == "running" and c["first_response_due"] == fr["due"]
    base_priority = c["priority"]
    await desk.advance(49)  # 80 % of 60 s
    c = await eventually(lambda: _with(desk, c["id"], lambda c: actions(c, "sla_warning")))
    assert not actions(c, "sla_breached")
    await desk.advance_to(fr["due"])
    c = await eventually(lambda: _with(desk, c["id"], lambda c: actions(c, "sla_breached")))
    assert deadline(c, "first_response")["state"] == "breached" and c["priority"] == base_priority + 2
    assert "escalated" in c["tags"] and deadline(c, "escalation_2")["state"] == "running"
    queues = {q["skill"]: q for q in (await desk.client.get("/v1/queues", headers=SUPERVISOR)).json()["items"]}
    assert queues["escalation"]["depth"] == 1
    late = int(actions(c, "sla_breached")[0]["detail"]["late_ms"])
    assert late < 300  # fired within a tick or so of its due time, not by a minute's sweep
    await desk.advance(901)  # level 2: 15 minutes
    c = await eventually(lambda: _with(desk, c["id"], lambda c: deadline(c, "escalation_2")["state"] == "breached"
                                       and any(d["kind"] == "escalation_3" for d in c["deadlines"])))
    await desk.advance(3601)  # level 3: an hour, the last one
    c = await eventually(lambda: _with(desk, c["id"], lambda c: deadline(c, "escalation_3")["state"] == "breached"))
    await asyncio.sleep(0.3)
    c = await desk.complaint(cid=c["id"])
    assert [d["kind"] for d in c["deadlines"]] == ["first_response", "resolution", "escalation_2", "escalation_3"]
    assert len(actions(c, "sla_breached")) == 3  # each fired once


async def _with(desk, cid, predicate):
    c = await desk.complaint(cid=cid)
    return c if predicate(c) else None


async def test_the_first_reply_stops_the_clock_and_waiting_on_the_customer_pauses_resolution(desk):
    mid = await desk.send("my refund is missing")
    c = await desk.complaint(mid)
    r = await desk.client.post(f"/v1/complaints/{c['id']}/replies", headers=ALICE,
                               json={"text": "Please send the receipt.", "awaiting_customer": True})
    assert r.status_code == 201
    c = r.json()["complaint"]
    assert deadline(c, "first_response")["state"] == "met"
    res = deadline(c, "resolution")
    assert res["state"] == "paused" and 47 * 3600_000 < res["remaining_ms"] <= 48 * 3600_000
    await desk.advance(49 * 3600)  # two days pass while we wait on the customer
    await asyncio.sleep(0.5)
    c = await desk.complaint(cid=c["id"])
    assert not actions(c, "sla_breached") and not actions(c, "sla_warning")
    # the customer answers (a follow-up in the thread): the clock runs on with what it had left
    await desk.send("here is the receipt", complaint_id=c["id"])
    c = await eventually(lambda: _with(desk, c["id"], lambda c: deadline(c, "resolution")["state"] == "running"))
    await desk.advance(48 * 3600)
    c = await eventually(lambda: _with(desk, c["id"], lambda c: deadline(c, "resolution")["state"] == "breached"))
    assert [h["detail"]["deadline"] for h in actions(c, "sla_breached")] == ["resolution"]


async def test_policy_sets_phone_formal_and_tier_deadlines(desk):
    r = await desk.client.post("/v1/complaints", headers=ALICE, json={
        "contact": {"kind": "phone", "value": "13800138000"}, "text": "我要投诉，转账失败", "channel": "phone"})
    c = await desk.complaint(r.json()["message_id"])
    created = _ts(c["created_at"])
    assert _ts(deadline(c, "first_response")["due"]) - created == pytest.approx(30, abs=0.01)
    assert _ts(deadline(c, "resolution")["due"]) - created == pytest.approx(24 * 3600, abs=0.01)  # formal
    vip = await desk.complaint(await desk.send("balance wrong", user="u-vip", customer_tier="vip"))
    assert _ts(deadline(vip, "first_response")["due"]) - _ts(vip["created_at"]) == pytest.approx(30, abs=0.01)
    # supervisors change the policy: e-mail-like channels, categories, warnings
    policy = (await desk.client.get("/v1/policy/deadlines", headers=ALICE)).json()
    policy["first_response_by_category"] = {"balance_query": 20}
    r = await desk.client.put("/v1/policy/deadlines", json=policy, headers=SUPERVISOR)
    assert r.status_code == 200
    bad = {**policy, "first_response_seconds": {"app": 10}}
    r = await desk.client.put("/v1/policy/deadlines", json=bad, headers=SUPERVISOR)
    assert r.status_code == 422 and "default" in r.json()["detail"]
    assert (await desk.client.put("/v1/policy/deadlines", json=policy, headers=ALICE)).status_code == 403
    await asyncio.sleep(1.1)  # workers re-read the policy within a second
    c = await desk.complaint(await desk.send("what is my balance", user="u-pol"))
    assert _ts(deadline(c, "first_response")["due"]) - _ts(c["created_at"]) == pytest.approx(20, abs=0.01)


def _ts(iso):
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


async def test_status_on_any_channel_in_both_languages(desk):
    c = await desk.complaint(await desk.send("交易号 T2026112300000123 扣款两次", user="u-status"))
    await desk.send(f"进度 {c['case_number']}", user="u-status")
    await desk.send(f"status {c['case_number']}", user="u-status", language="en")
    await desk.send(f"进度 {c['case_number']}", user="someone-else")
    c = await eventually(lambda: _with(desk, c["id"], lambda c: len([r for r in c["replies"]
                                                                        if r["kind"] == "status"]) == 2))
    zh, en = [r["text"] for r in c["replies"] if r["kind"] == "status"]
    assert c["case_number"] in zh and "已受理" in zh
    assert c["case_number"] in en and "waiting for an agent" in en
    await desk.client.post(f"/v1/complaints/{c['id']}/replies", headers=ALICE, json={"text": "退款已发起，预计3个工作日到账"})
    await desk.send(f"查询进度 {c['case_number']}", user="u-status")
    c = await eventually(lambda: _with(desk, c["id"], lambda c: len([r for r in c["replies"]
                                                                        if r["kind"] == "status"]) == 3))
    assert "退款已发起" in [r for r in c["replies"] if r["kind"] == "status"][-1]["text"]  # the last public update
    all_cases = (await desk.client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
    assert len(all_cases) == 1  # status questions are not complaints


async def test_outcome_survey_and_reopen(desk):
    c = await desk.complaint(await desk.send("fee too high for withdrawal", user="u-survey", language="en"))
    r = await desk.client.post(f"/v1/complaints/{c['id']}/resolve", headers=ALICE,
                               json={"outcome": "rejected"})
    assert r.status_code == 422  # a rejection needs a reason the customer can read
    r = await desk.client.post(f"/v1/complaints/{c['id']}/resolve", headers=ALICE,
                               json={"outcome": "rejected", "reason": "The fee is in the published schedule."})
    c = r.json()
    outcome = next(r for r in c["replies"] if r["text"].startswith("Your case"))
    assert "not upheld" in outcome["text"] and "published schedule" in outcome["text"] and "12363" in outcome["text"]
    assert any(r["kind"] == "survey" for r in c["replies"])
    assert deadline(c, "resolution")["state"] == "met" and deadline(c, "first_response")["state"] == "cancelled"
    await desk.send("4 stars", user="u-survey")
    c = await eventually(lambda: _with(desk, c["id"], lambda c: c["satisfaction"] == 4))
    assert actions(c, "survey_answered")
    # still unhappy: any other reply within the window reopens the case
    await desk.send("That fee was never shown to me, please check again", user="u-survey")
    c = await eventually(lambda: _with(desk, c["id"], lambda c: c["status"] == "reopened"))
    assert c["reopened_count"] == 1 and deadline(c, "first_response")["state"] == "running"
    assert any("reopened" in r["text"] for r in c["replies"])
    queues = {q["skill"]: q for q in (await desk.client.get("/v1/queues", headers=SUPERVISOR)).json()["items"]}
    assert queues["fees"]["depth"] == 1
    report = (await desk.client.get("/v1/reports/service", headers=SUPERVISOR)).json()
    assert report["overall"]["surveys_answered"] == 1 and report["overall"]["reopened"] == 1
    assert report["by_channel"]["app"]["complaints"] == 1 and "meets" in report


async def test_chinese_outcome_and_survey_words(desk):
    c = await desk.complaint(await desk.send("重复扣款128元，请退款", user="u-zh-survey"))
    r = await desk.client.post(f"/v1/complaints/{c['id']}/resolve", headers=ALICE,
                               json={"outcome": "upheld", "reason": "已退回128元。"})
    assert any("申诉成立" in r["text"] and "已退回" in r["text"] for r in r.json()["replies"])
    await desk.send("非常满意", user="u-zh-survey")
    await eventually(lambda: _with(desk, c["id"], lambda c: c["satisfaction"] == 5))


async def test_templates_are_editable_and_keep_their_placeholders(desk):
    r = await desk.client.put("/v1/templates", headers=SUPERVISOR,
                              json={"templates": {"ack": {"en": "Thanks! (no case number)"}}})
    assert r.status_code == 422 and "{case}" in r.json()["detail"]
    r = await desk.client.put("/v1/templates", headers=SUPERVISOR,
                              json={"templates": {"ack": {"en": "Got it. Case {case}. Reply 'status {case}' any time."}}})
    assert r.status_code == 200 and r.json()["templates"]["ack"]["en"]["customised"] is True
    await asyncio.sleep(1.1)
    c = await desk.complaint(await desk.send("app crashes", user="u-tpl", language="en"))
    assert c["replies"][0]["text"] == f"Got it. Case {c['case_number']}. Reply 'status {c['case_number']}' any time."
    await desk.client.put("/v1/templates", headers=SUPERVISOR, json={"templates": {"ack": {"en": ""}}})


async def test_breaches_reach_supervisors_through_the_webhook(clocked):
    received = []

    class Sink(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    plugins = app_plugins(NotifyWebhook(NotifySettings(url=f"http://127.0.0.1:{server.server_address[1]}/hook",
                                                        secret="s3cret")))
    try:
        async with gateway_client(clocked, plugins) as client:
            d = Desk(clocked, plugins, client)
            await d.start()
            try:
                c = await d.complaint(await d.send("balance wrong, 13800138000"))
                await d.advance(61)
                await eventually(lambda: _async(any(json.loads(b)["kind"] == "sla_breached" for _, b in received)))
            finally:
                await d.stop()
    finally:
        server.shutdown()
    headers, body = next((h, b) for h, b in received if json.loads(b)["kind"] == "sla_breached")
    assert headers["X-Gateway-Signature"] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    payload = json.loads(body)
    assert payload["case_number"] == c["case_number"] and b"13800138000" not in body


async def _async(value):
    return value


def test_a_killed_worker_leaves_no_timer_behind_and_none_fires_twice(redis_url, prefix, tmp_path):
    """Twenty complaints, the worker SIGKILLed with their timers pending, the clock moved past
    every deadline, two new workers started: each warning and each breach happens exactly once."""
    import redis as redis_sync

    env = make_env(redis_url, prefix, tmp_path, GATEWAY_TEST_CLOCK="1", GATEWAY_PLUGINS_AUTOLOAD="0",
                   GATEWAY_PLUGINS=str(tmp_path / "plugins.toml"))
    (tmp_path / "plugins.toml").write_text('[plugins.app]\nenabled = true\n')
    r = redis_sync.Redis.from_url(redis_url)

    def worker():
        return subprocess.Popen([sys.executable, "-m", "gateway", "worker"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def submit_all():
        from gateway.app import create_app
        from gateway.settings import load_settings
        from litestar.testing import AsyncTestClient

        async with AsyncTestClient(app=create_app(load_settings(env))) as client:
            for n in range(20):
                resp = await client.post("/v1/messages", json={"user_id": f"k{n}", "text": f"problem number {n}"},
                                         headers=APP)
                assert resp.status_code == 202

    first = worker()
    try:
        asyncio.run(submit_all())
        deadline_at = time.monotonic() + 20
        while r.zcard(prefix + "idx:all") < 20 and time.monotonic() < deadline_at:
            time.sleep(0.1)
        assert r.zcard(prefix + "idx:all") == 20
        assert r.zcard(prefix + "timers") == 20 * 4  # first response + resolution, warn + due each
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    r.incrby(prefix + "clock:offset", 3 * 86400 * 1000)  # everything is overdue now
    workers = [worker(), worker()]
    try:
        deadline_at = time.monotonic() + 30
        while time.monotonic() < deadline_at:
            remaining = r.zcount(prefix + "timers", "-inf", int(time.time() * 1000) + 3 * 86400 * 1000)
            if remaining == 0 and r.zcard(prefix + "timers:inflight") == 0:
                break
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(15)
    from gateway.store import decode_complaint

    for key in r.scan_iter(match=prefix + "complaint:*"):
        c = decode_complaint(r.get(key))
        breaches = [h.detail["deadline"] for h in c.history if h.action == "sla_breached"]
        warnings = [h.detail["deadline"] for h in c.history if h.action == "sla_warning"]
        assert sorted(warnings) == ["first_response", "resolution"], c.case_number
        assert breaches.count("first_response") == 1 and breaches.count("resolution") == 1, c.case_number
