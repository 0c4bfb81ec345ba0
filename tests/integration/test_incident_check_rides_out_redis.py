"""Incident detection is a step that Redis going away for a moment cannot skip.

The worker talks to Redis through a fault-injecting proxy (tests/faultproxy.py). Four customers
report the same crash; the fifth report would form the incident, and the proxy resets the
worker's connection in the middle of the very answer incident detection reads (the recent
reports' fault tokens: the answer of the commit that notes the complaint in the window). The
message's job is retried, its retry runs the check again, and the incident forms with all five
complaints.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from msgspec.structs import replace

from tests.conftest import APP, SUPERVISOR, app_plugins, eventually, gateway_client, run_worker

pytestmark = pytest.mark.integration

CRASH_REPORTS = ["app crashes when I pay", "付款时app闪退", "The app crashed while paying!", "支付的时候应用崩溃了",
                 "my app crashes on the payment screen"]


@pytest.fixture
def proxy(redis_fault_proxy):
    return redis_fault_proxy


async def send(client, user, text):
    resp = await client.post("/v1/messages", json={"user_id": user, "text": text}, headers=APP)
    assert resp.status_code == 202, resp.text
    return resp.json()["message_id"]


async def complaint_of(client, mid):
    state = (await client.get(f"/v1/messages/{mid}", headers=APP)).json()
    return (await client.get(f"/v1/complaints/{state['complaint_id']}", headers=SUPERVISOR)).json()


async def test_incident_detection_meeting_a_lost_connection_links_the_complaints_later(settings, proxy, redis_url):
    settings = replace(settings, incident_min_customers=5)
    plugins = app_plugins()
    through_proxy = replace(settings, redis_url=f"redis://127.0.0.1:{proxy.port}/0")  # the worker's way to Redis
    async with gateway_client(settings, plugins) as client:
        mids = [await send(client, f"u-crash-{n}", text) for n, text in enumerate(CRASH_REPORTS[:4])]
        await run_worker(through_proxy, plugins)
        assert (await client.get("/v1/incidents", headers=SUPERVISOR)).json()["items"] == []  # four: not yet

        mids.append(await send(client, "u-crash-4", CRASH_REPORTS[4]))
        # the next run is a worker process of its own (it knows nothing of the window yet), so the
        # answer to its note carries the recent reports' tokens; it is cut mid-way: the connection resets
        from router import incidents as incidents_module

        incidents_module._cache = incidents_module._WindowCache()
        proxy.cut(after=b"<crash>")
        r = aioredis.from_url(redis_url)  # the test's own way to Redis, around the proxy

        async def put_off() -> bool:
            """Once the check has met the fault and been put off for later, Redis is back (the
            proxy passes)."""
            if await retried(r, settings.redis_prefix):
                proxy.pass_through()
                return True
            return False

        watch = asyncio.create_task(eventually(put_off, timeout=120))
        try:
            await run_worker(through_proxy, plugins)  # a burst run: until nothing is left queued
            (incident,) = (await client.get("/v1/incidents", headers=SUPERVISOR)).json()["items"]
            assert incident["complaint_count"] == 5
            for mid in mids:
                assert (await complaint_of(client, mid))["incident_id"] == incident["id"]
            assert await retried(r, settings.redis_prefix) >= 1  # the check met the fault, and was put off
        finally:
            proxy.pass_through()
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await r.aclose()


async def retried(r, prefix: str) -> int:
    """How many times the worker put an incident check off for later (its job metrics: the
    message's job, which checks inline, or a check queued as a job of its own)."""
    counts = await r.hgetall(prefix + "metrics")
    return sum(int(v) for k, v in counts.items()
               if k.startswith(b"gateway_worker_jobs|") and b"result=retry" in k
               and (b"job=consider_incident" in k or b"job=process_message" in k))


async def test_the_incident_check_run_again_changes_nothing(settings, redis_url):
    """arq runs a job at least once: a second run of every complaint's check (as after a worker
    died before finishing one) answers the same incident with the same complaints, forms no
    second one and links no complaint twice."""
    from router.redis_pool import redis_client
    from router.store import ComplaintStore
    from router.context import WorkerContext
    from router.incident_check import consider_incident

    settings = replace(settings, incident_min_customers=5)
    plugins = app_plugins()
    async with gateway_client(settings, plugins) as client:
        mids = [await send(client, f"u-again-{n}", text) for n, text in enumerate(CRASH_REPORTS)]
        await run_worker(settings, plugins)
        (incident,) = (await client.get("/v1/incidents", headers=SUPERVISOR)).json()["items"]
        complaints = [await complaint_of(client, mid) for mid in mids]
        r = redis_client(redis_url)
        store = ComplaintStore(settings.redis_prefix)
        store.bind(r)
        try:
            for complaint, mid in zip(complaints, mids):  # every check once more
                assert await consider_incident(WorkerContext.of(settings, store).job_ctx(), complaint["id"], mid) == "linked"
        finally:
            await r.aclose()
        assert (await client.get("/v1/incidents", headers=SUPERVISOR)).json()["items"] == [incident]
        for mid in mids:
            again = await complaint_of(client, mid)
            assert again["incident_id"] == incident["id"]
            assert [e["action"] for e in again["history"]].count("incident_linked") == 1


async def test_the_complaint_that_formed_an_incident_answers_all_of_it_again(settings, redis_url):
    """The check of the complaint that formed an incident, run again (its worker died after the
    forming): it answers the incident with all of its complaints again (not only itself), and
    links any not linked yet (an earlier version linked them after the forming), leaving the
    links of the others as they were."""
    from router.redis_pool import redis_client
    from router.store import INCIDENT_LINK, ComplaintStore
    from router.incidents import NO_INCIDENT, Decision, Incidents

    r = redis_client(redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    incidents = Incidents(store, window_minutes=10, min_customers=3)
    try:
        assert await incidents.consider("cmp_1", "cus_a", "function_fault", CRASH_REPORTS[0]) == NO_INCIDENT
        assert await incidents.consider("cmp_2", "cus_b", "function_fault", CRASH_REPORTS[2]) == NO_INCIDENT
        formed, linked, _ = await incidents.consider("cmp_3", "cus_c", "function_fault", CRASH_REPORTS[4])
        assert formed and sorted(linked) == ["cmp_1", "cmp_2", "cmp_3"]
        link_of = store.keys.delivery
        await r.hdel(link_of("cmp_1"), INCIDENT_LINK)  # as an earlier version left it
        kept = await r.hget(link_of("cmp_2"), INCIDENT_LINK)
        again, relinked, _ = await incidents.consider("cmp_3", "cus_c", "function_fault", CRASH_REPORTS[4])
        assert again == formed and sorted(relinked) == ["cmp_1", "cmp_2", "cmp_3"]
        assert [link["incident_id"] for link in json.loads(await r.hget(link_of("cmp_1"), INCIDENT_LINK))] == [formed]
        assert await r.hget(link_of("cmp_2"), INCIDENT_LINK) == kept
        assert await incidents.consider("cmp_2", "cus_b", "function_fault",
                                        CRASH_REPORTS[2]) == Decision(formed, ["cmp_2"])
        assert [i["id"] for i in await incidents.list()] == [formed]
        assert await incidents.members(formed) == ["cmp_1", "cmp_2", "cmp_3"]
    finally:
        await r.aclose()
