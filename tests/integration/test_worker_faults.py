"""Worker behaviour under faults: undecodable input is quarantined (and visible, retryable,
discardable), a sender that fails is retried through the outbox, listeners hear events, a lost
job is recovered, and the app's key sees only app cases."""

from __future__ import annotations

import pytest

from router.store import PlannedJob

from normalizer.ids import now_ms
from normalizer.schema import Classification, DeliveryResult
from plugins.hookspecs import hookimpl
from router.housekeeping import recover_pending, resend_overdue
from tests.conftest import ALICE, APP, SUPERVISOR, app_plugins, eventually, run_worker

pytestmark = pytest.mark.integration


drain_with = run_worker


async def test_undecodable_message_is_quarantined_listed_retried_and_discarded(client, drain, store):
    mid = (await client.post("/v1/messages", json={"user_id": "u1", "text": "hello"}, headers=APP)).json()["message_id"]
    good_data = await store.r.hget(store.keys.msg(mid), "data")
    await store.r.hset(store.keys.msg(mid), "data", b"\xc1 not msgpack")
    await drain()
    assert (await client.get(f"/v1/messages/{mid}", headers=APP)).json()["status"] == "quarantined"
    items = (await client.get("/v1/quarantine", headers=SUPERVISOR)).json()["items"]
    assert len(items) == 1 and items[0]["message_id"] == mid and items[0]["raw_size"] > 0
    qid = items[0]["id"]

    # the operator repairs the record and retries: it becomes a complaint
    await store.r.hset(store.keys.msg(mid), "data", good_data)
    r = await client.post(f"/v1/quarantine/{qid}/retry", headers=SUPERVISOR)
    assert r.status_code == 202
    await drain()
    assert (await client.get(f"/v1/messages/{mid}", headers=APP)).json()["status"] == "processed"
    assert (await client.get("/v1/quarantine", headers=SUPERVISOR)).json()["items"] == []

    qid2 = await store.quarantine(channel="x", reason="test", raw=b"raw")
    assert (await client.delete(f"/v1/quarantine/{qid2}", headers=SUPERVISOR)).status_code == 204
    assert (await client.delete(f"/v1/quarantine/{qid2}", headers=SUPERVISOR)).status_code == 404


class FlakySender:
    def __init__(self):
        self.calls = []

    async def send(self, message):
        self.calls.append(message.id)
        if len(self.calls) == 1:
            raise ConnectionError("provider down")
        return DeliveryResult(status="sent", provider_message_id=f"p-{message.id}")


class FlakyChannel:
    def __init__(self):
        self.sender = FlakySender()

    @hookimpl(tryfirst=True)
    def channel_sender(self, channel, services):
        return self.sender if channel == "app" else None


async def test_failed_acknowledgement_is_retried_at_once(client, settings, store):
    channel = FlakyChannel()
    plugins = app_plugins(channel)
    r = await client.post("/v1/messages", json={"user_id": "u1", "text": "refund please"}, headers=APP)
    await drain_with(settings, plugins)
    cid = (await client.get(f"/v1/messages/{r.json()['message_id']}", headers=APP)).json()["complaint_id"]
    complaint = await store.get(cid)
    assert complaint.replies[0].delivery == "sent"  # the inline try failed; a send job a second later did it
    assert complaint.replies[0].provider_message_id == f"p-{complaint.replies[0].id}"
    assert channel.sender.calls == [complaint.replies[0].id] * 2
    assert await store.r.zcard(store.keys.outbox) == 0


async def test_the_outbox_sends_a_reply_whose_send_job_was_lost(client, settings, store):
    """A reply is committed with its send job and an outbox entry; if the job is lost (a crash,
    Redis restarted without the last writes), housekeeping finds the reply still owed."""
    plugins = app_plugins()
    r = await client.post("/v1/messages", json={"user_id": "u2", "text": "refund please"}, headers=APP)
    await drain_with(settings, plugins)
    cid = (await client.get(f"/v1/messages/{r.json()['message_id']}", headers=APP)).json()["complaint_id"]
    r = await client.post(f"/v1/complaints/{cid}/replies", json={"text": "We are on it."}, headers=SUPERVISOR)
    reply_id = r.json()["reply"]["id"]
    from router.store import job_key

    await store.r.delete(job_key(f"send:{reply_id}"))  # the job is gone
    await store.r.zrem(store.keys.arq_queue, f"send:{reply_id}")
    await drain_with(settings, plugins)
    assert (await store.get(cid)).replies[-1].delivery == "queued"
    await store.r.zadd(store.keys.outbox, {f"{cid}|{reply_id}": now_ms() - 1})  # its grace period is over
    assert await resend_overdue(store) == 1
    await drain_with(settings, plugins)
    assert (await store.get(cid)).replies[-1].delivery in ("sent", "delivered")
    assert await store.r.zcard(store.keys.outbox) == 0

    # an entry that outlived its reply's delivery (the soak saw one come back through a race
    # between housekeeping and the send) is dropped by the send job that finds nothing to send
    await store.r.zadd(store.keys.outbox, {f"{cid}|{reply_id}": now_ms() - 1})
    assert await resend_overdue(store) == 1
    await drain_with(settings, plugins)
    assert await store.r.zcard(store.keys.outbox) == 0


class Listener:
    def __init__(self):
        self.events = []

    @hookimpl
    async def complaint_event(self, event, complaint):
        self.events.append((event.kind, complaint.case_number))


class Classifier:
    @hookimpl
    def classify_message(self, message):
        return Classification(category="balance_query", source="test")


async def test_listeners_hear_events_and_plugin_classifier_wins(client, settings):
    listener = Listener()
    plugins = app_plugins(listener, Classifier())
    r = await client.post("/v1/messages", json={"user_id": "u1", "text": "charged twice"}, headers=APP)
    await drain_with(settings, plugins)
    state = (await client.get(f"/v1/messages/{r.json()['message_id']}", headers=APP)).json()
    assert sorted(listener.events) == [("created", state["case_number"]), ("routed", state["case_number"])]
    complaint = (await client.get(f"/v1/complaints/{state['complaint_id']}", headers=ALICE)).json()
    assert complaint["category"] == "balance_query"
    categorised = next(h for h in complaint["history"] if h["action"] == "categorised")
    assert categorised["detail"]["by"] == "plugin:extra1"


async def test_a_lost_job_is_recovered(client, drain, store, settings):
    mid = (await client.post("/v1/messages", json={"user_id": "u1", "text": "hi"}, headers=APP)).json()["message_id"]
    # the job vanishes (Redis lost it, or it expired while no worker ran)
    from arq.constants import job_key_prefix

    await store.r.delete(job_key_prefix + f"ingest:{mid}")
    await store.r.zrem(store.keys.arq_queue, f"ingest:{mid}")
    await store.r.zadd(store.keys.pending, {mid: now_ms() - 120_000})
    assert await recover_pending(store) == 1
    await drain()
    assert (await client.get(f"/v1/messages/{mid}", headers=APP)).json()["status"] == "processed"
    assert await recover_pending(store) == 0


async def test_a_message_job_is_its_place_in_the_queue(client, drain, store):
    """The intake writes no job key for a message: the queue's entry (its id, scored with the
    message's arrival) is the whole job, the worker makes arq's bytes from it, and a message
    that waits long in a backlog is not taken for lost (queued again, it would lose its place)."""
    from arq.constants import job_key_prefix

    mid = (await client.post("/v1/messages", json={"user_id": "u1", "text": "charged twice"}, headers=APP)).json()["message_id"]
    job_id = store.keys.job_id(f"ingest:{mid}")
    assert not await store.r.exists(job_key_prefix + job_id)
    received_ms = int(await store.r.hget(store.keys.msg(mid), "received_ms"))
    assert await store.r.zscore(store.keys.arq_queue, job_id) == received_ms
    await store.r.zadd(store.keys.pending, {mid: now_ms() - 120_000})  # waiting for two minutes
    assert await store.job_exists(f"ingest:{mid}")
    assert await recover_pending(store) == 0
    assert await store.r.zscore(store.keys.arq_queue, job_id) == received_ms  # its place kept
    await drain()
    assert (await client.get(f"/v1/messages/{mid}", headers=APP)).json()["status"] == "processed"
    assert not await store.r.exists(job_key_prefix + job_id) and not await store.job_exists(f"ingest:{mid}")


async def test_the_app_key_sees_only_app_cases(client, drain):
    await client.post("/v1/complaints", headers=ALICE, json={
        "channel": "counter", "contact": {"kind": "phone", "value": "+8613800138000"}, "text": "fee too high"})
    await drain()
    cid = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"][0]["id"]
    assert (await client.get(f"/v1/complaints/{cid}", headers=APP)).status_code == 404
    assert (await client.get(f"/v1/complaints/{cid}", headers=ALICE)).status_code == 200


async def test_enqueue_is_idempotent_by_job_id(store):
    job = PlannedJob("dispatch_event", "event:x:created", ("x", "created", 0, "t", {}))
    await store.enqueue(job)
    await store.enqueue(job)
    assert await store.r.zcard(store.keys.arq_queue) == 1


class HangsOnce:
    """A classifier whose first call hangs (a plugin waiting on a dead service)."""

    def __init__(self) -> None:
        self.calls = 0
        self.hung_for: float | None = None  # how long the first call hung before it was stopped

    @hookimpl
    async def classify_message(self, message):
        import asyncio
        import time

        self.calls += 1
        if self.calls == 1:
            started = time.monotonic()
            try:
                await asyncio.sleep(120)
            finally:
                self.hung_for = time.monotonic() - started
        return None


async def test_a_job_that_runs_out_of_time_is_retried_not_dropped(client, settings):
    """arq cancels a job at its timeout and counts it failed for good; the worker stops it just
    before (job timeout - 2 s) and retries it with backoff, so the message is still processed."""
    import asyncio

    from msgspec.structs import replace

    from router.worker import create_worker

    # 5 s: the hung try is stopped at 3 s, and the retry has as long for its ordinary work
    short = replace(settings, job_timeout_seconds=5)
    hangs = HangsOnce()
    mid = (await client.post("/v1/messages", json={"user_id": "u1", "text": "charged twice"},
                             headers=APP)).json()["message_id"]
    worker = create_worker(short, burst=False, handle_signals=False, plugins=app_plugins(hangs))
    task = asyncio.create_task(worker.main())

    async def processed():
        return (await client.get(f"/v1/messages/{mid}", headers=APP)).json()["status"] == "processed"

    try:
        await eventually(processed, timeout=60, every=0.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()
    # the hung try was stopped by the worker's own limit (arq's would have dropped the job), and
    # the one retry (after 2 s) went through
    assert hangs.calls == 2
    assert hangs.hung_for is not None and hangs.hung_for >= 2.9, hangs.hung_for
