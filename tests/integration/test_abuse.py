"""Abuse and overload: a flood from one sender or one channel cannot starve the rest, a backlog
is refused with 503 + Retry-After (never dropped silently), and every POST route has a body
size limit."""

from __future__ import annotations

import asyncio
import time

import pytest
from msgspec.structs import replace

from tests.conftest import APP, SUPERVISOR, app_plugins, gateway_client, run_worker, stored_keys

pytestmark = pytest.mark.integration


async def test_one_sender_flooding_is_limited_and_others_still_get_through(settings):
    desk = (replace(settings, contact_rate_per_minute=10), app_plugins())
    async with gateway_client(*desk) as client:
        # a sender's budget is per minute of the clock: the flood starts early enough in a minute for
        # its 15 messages to fall in one (across a minute's end the second part has a budget of its own)
        if time.time() % 60 > 45:
            await asyncio.sleep(60.05 - time.time() % 60)
        answers = [await client.post("/v1/messages", json={"user_id": "flooder", "text": f"spam {n}"}, headers=APP)
                   for n in range(15)]
        assert [r.status_code for r in answers] == [202] * 10 + [429] * 5
        refused = answers[-1]
        assert refused.headers["retry-after"] == "60" and refused.json()["code"] == "rate_limited"
        assert (await client.post("/v1/messages", json={"user_id": "someone-else", "text": "refund please"},
                                  headers=APP)).status_code == 202
        await run_worker(*desk)
        items = (await client.get("/v1/complaints", params={"limit": 200}, headers=SUPERVISOR)).json()["items"]
        assert sum(1 for c in items if c["contact"]["value"] == "someone-else") == 1


async def test_a_flooding_channel_is_limited_per_second(settings):
    desk = (replace(settings, channel_rate_per_second=5, contact_rate_per_minute=0), app_plugins())
    async with gateway_client(*desk) as client:
        codes = [(await client.post("/v1/messages", json={"user_id": f"bot{n}", "text": "x"}, headers=APP)).status_code
                 for n in range(20)]
    assert 429 in codes and codes.count(202) <= 15  # at most 5 per second over the few seconds it took
    assert all(c in (202, 429) for c in codes)


async def test_a_backlog_is_refused_with_retry_after_and_nothing_is_lost(settings):
    desk = (replace(settings, max_pending=3), app_plugins())
    async with gateway_client(*desk) as client:
        codes = [(await client.post("/v1/messages", json={"user_id": f"b{n}", "text": "refund please"},
                                    headers=APP)) for n in range(5)]
        assert [r.status_code for r in codes] == [202, 202, 202, 503, 503]
        assert codes[3].headers["retry-after"] == "5" and codes[3].json()["code"] == "overloaded"
        before = await stored_keys(desk[0])
        r = await client.post("/v1/messages", json={"user_id": "b9", "text": "refund please",
                                                    "client_message_id": "retry-me"}, headers=APP)
        assert r.status_code == 503
        assert [k for k in await stored_keys(desk[0]) if "idem" in k] == [k for k in before if "idem" in k]
        await run_worker(*desk)  # the workers catch up: the same request is taken now
        r = await client.post("/v1/messages", json={"user_id": "b9", "text": "refund please",
                                                    "client_message_id": "retry-me"}, headers=APP)
        assert r.status_code == 202


async def test_every_post_route_limits_its_body(settings):
    big = b"{" + b"x" * 300_000 + b"}"
    desk = (replace(settings, max_body_bytes=128 * 1024), app_plugins())
    async with gateway_client(*desk) as client:
        routes = [(route.path, method) for route in client.app.routes for method in getattr(route, "methods", ())
                  if method in ("POST", "PUT")]
        assert len(routes) >= 15
        for path, method in routes:
            url = path.replace("{complaint_id:str}", "cmp_x").replace("{customer_id:str}", "cus_x") \
                .replace("{incident_id:str}", "inc_x").replace("{item_id:str}", "q_x").replace("{skill:str}", "general") \
                .replace("{agent_id:str}", "alice").replace("{version:int}", "1")
            headers = {**(APP if url == "/v1/messages" else SUPERVISOR), "Content-Type": "application/json"}
            r = await client.request(method, url, content=big, headers=headers)
            assert r.status_code == 413, (method, url, r.status_code, r.text[:200])

