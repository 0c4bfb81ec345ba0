"""Deadline events in batches and the timer loop's sleep (router/timers.py, router/delivery.py):
warnings and breaches go through the event outbox to listeners, a batch at a time, in order per
complaint, at least once (a refused batch comes again, a job cut off mid-batch leaves it in the
outbox); the loop looks at Redis only as often as it must and still fires what another process
adds. Real Redis, the worker's own jobs, real HTTP for the supervisor webhook."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis.asyncio as aioredis
from msgspec.structs import replace

from adapters.notify_webhook import NotifySettings, NotifyWebhook
from normalizer.schema import Complaint, ComplaintEvent, ComplaintStatus, Contact, Deadline
from plugins.hookspecs import hookimpl
from router.context import WorkerContext, context_of
from router.deadlines import timer_members
from router.delivery import dispatch_events
from router.store import ComplaintStore, encode_complaint
from router.timers import FIRE_TOGETHER, IDLE_LOOK_MS, Clock, PolicyCache, TimerLoop, fire
from router.worker import create_worker
from tests.conftest import app_plugins, eventually

pytestmark = pytest.mark.integration

PHONE = "+8613800138000"


class BatchListener:
    """Takes events a batch at a time; refuses the first ``refuse`` batches (its endpoint away)."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.batches: list[list[tuple[str, str, str]]] = []
        self.contacts: set[str] = set()

    @hookimpl
    async def complaint_events(self, events, complaints):
        if self.refuse > 0:
            self.refuse -= 1
            raise RuntimeError("endpoint away")
        self.batches.append([(e.complaint_id, e.kind, e.detail.get("deadline", "")) for e in events])
        self.contacts.update(c.contact.value for c in complaints.values())

    def seen(self) -> list[tuple[str, str, str]]:
        return [e for batch in self.batches for e in batch]


class SingleListener:
    """Knows only the per-event hook."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    @hookimpl
    def complaint_event(self, event, complaint):
        self.events.append((event.complaint_id, event.kind, event.detail.get("deadline", "")))


async def write_cases(store: ComplaintStore, n: int, *, warn_in: float = 0, due_in: float | None = None,
                      tag: str = "ev") -> list[str]:
    """``n`` complaints nobody answers, each a first-response deadline (a warning ``warn_in`` s
    from now unless ``due_in`` alone is given) with its timer set."""
    now = datetime.now(timezone.utc)
    ids = []
    for i in range(n):
        cid = f"cmp_{tag}{i:03d}"
        if due_in is None:
            deadline = Deadline(kind="first_response", due=now + timedelta(seconds=warn_in + 1),
                                warn_at=now + timedelta(seconds=warn_in))
        else:
            deadline = Deadline(kind="first_response", due=now + timedelta(seconds=due_in))
        c = Complaint(id=cid, case_number=f"C-20261201-{i:06d}", status=ComplaintStatus.accepted,
                      category="other", formal_complaint=False, channel="twilio_sms", customer_id=f"cus_{i}",
                      contact=Contact(kind="phone", value=PHONE), language="en", created_at=now, updated_at=now,
                      skill="general", deadlines=[deadline])
        await store.r.set(store.keys.complaint(cid), encode_complaint(c))
        await store.r.zadd(store.keys.timers, timer_members(cid, deadline))
        ids.append(cid)
    return ids


def per_case(events: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for cid, kind, _ in events:
        out.setdefault(cid, []).append(kind)
    return out


class Worker:
    """A worker (not burst: its timer loop keeps going) on the test clock."""

    def __init__(self, settings, plugins) -> None:
        self.settings = replace(settings, test_clock=True)
        self.worker = create_worker(self.settings, burst=False, handle_signals=False, plugins=plugins)

    async def __aenter__(self) -> "Worker":
        self.task = asyncio.create_task(self.worker.main())
        await eventually(lambda: _async(self.worker.ctx.get("worker") is not None))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(asyncio.gather(*self.worker.tasks.values(), return_exceptions=True), 10)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await asyncio.gather(self.worker.close(), return_exceptions=True)

    @property
    def loop(self) -> TimerLoop:
        return context_of(self.worker.ctx).timers


async def _async(value):
    return value


async def advance(store: ComplaintStore, seconds: float) -> None:
    await store.r.incrby(store.keys.clock_offset, int(seconds * 1000))


async def test_an_outage_s_warnings_and_breaches_reach_listeners_in_batches_in_order(settings, store):
    """Five unanswered complaints: every warning and breach reaches a batch listener in fewer
    calls than events (with masked complaints) and a per-event listener one call each; each
    case's warning comes before its breach; the outbox is empty afterwards."""
    batch, single = BatchListener(), SingleListener()
    ids = await write_cases(store, 5, warn_in=30)
    async with Worker(settings, app_plugins(batch, single)):
        await advance(store, 60)  # warnings and due times have passed
        await eventually(lambda: _async(len(batch.seen()) == 10 and len(single.events) == 10), timeout=20)
    assert per_case(batch.seen()) == {cid: ["sla_warning", "sla_breached"] for cid in ids}
    assert per_case(single.events) == {cid: ["sla_warning", "sla_breached"] for cid in ids}
    assert len(batch.batches) < 10  # the five warnings at least came together
    assert PHONE not in batch.contacts  # masked: the listener did not ask for personal data
    assert await store.r.llen(store.keys.escalations) == 0


async def test_one_tick_fires_a_claim_of_many_in_groups_each_as_alone(settings, store):
    """An outage's breaches fall due together: one tick claims them all and writes them a group
    of ``FIRE_TOGETHER`` complaints at a time; each is breached once, with its event, as a timer
    fired alone would be; a stale timer among them (another generation) changes nothing."""
    n = FIRE_TOGETHER + 7
    ids = await write_cases(store, n, due_in=-1)
    await store.r.zadd(store.keys.timers, {f"{ids[0]}|first_response|due|9": 0})  # not its generation
    loop = TimerLoop(store, Clock(store), PolicyCache(store))
    assert await loop.tick() == n + 1
    assert loop.fired == n + 1  # (stale counts as done: nothing comes back after the lease)
    assert await store.r.zcard(store.keys.timers_inflight) == 0
    for cid in ids:
        complaint = await store.get(cid)
        assert [h.action for h in complaint.history].count("sla_breached") == 1, cid
        assert complaint.deadlines[0].state == "breached" and "escalated" in complaint.tags
    assert await store.r.llen(store.keys.escalations) == n
    assert await loop.tick() == 0


async def test_a_refused_batch_comes_again_and_nothing_is_lost(settings, store):
    """The listener's endpoint is away for its first batch: the batch is offered again (backoff),
    every event arrives, each case's in order."""
    batch = BatchListener(refuse=1)
    ids = await write_cases(store, 3, warn_in=30)
    async with Worker(settings, app_plugins(batch)):
        await advance(store, 60)
        await eventually(lambda: _async(
            {(c, k) for c, k, _ in batch.seen()} == {(c, k) for c in ids for k in ("sla_warning", "sla_breached")}),
            timeout=30)
    assert batch.refuse == 0
    for cid, kinds in per_case(batch.seen()).items():
        assert kinds.index("sla_warning") < kinds.index("sla_breached"), cid
    assert await store.r.llen(store.keys.escalations) == 0


async def test_a_dispatch_cut_off_mid_batch_leaves_its_events_for_the_next(settings, store):
    """The job is cut off while a listener holds the batch (a worker killed mid-batch): the
    events stay in the outbox, and the next run delivers all of them, in order."""
    ids = await write_cases(store, 3, due_in=-1)  # already overdue, no warning set: each fire breaches
    clock, policies = Clock(store), PolicyCache(store)
    for cid in ids:
        assert await fire(store, clock, policies, f"{cid}|first_response|due|1", 0) == "breached"
    assert await store.r.llen(store.keys.escalations) == 3  # breaches only: these had no warning set

    class Stalling:
        def __init__(self) -> None:
            self.got = asyncio.Event()

        @hookimpl
        async def complaint_events(self, events, complaints):
            self.got.set()
            await asyncio.Event().wait()  # never answers

    stalling = Stalling()
    w = WorkerContext.of(settings, store, app_plugins(stalling))
    job = asyncio.create_task(dispatch_events(w.job_ctx()))
    await asyncio.wait_for(stalling.got.wait(), 10)
    job.cancel()
    await asyncio.gather(job, return_exceptions=True)
    assert await store.r.llen(store.keys.escalations) == 3

    batch = BatchListener()
    w = WorkerContext.of(settings, store, app_plugins(batch))
    assert await dispatch_events(w.job_ctx()) == "sent 3"
    assert [(c, k) for c, k, _ in batch.seen()] == [(cid, "sla_breached") for cid in ids]
    assert await store.r.llen(store.keys.escalations) == 0


async def test_without_listeners_the_outbox_is_emptied_unread(settings, store):
    ids = await write_cases(store, 2, due_in=-1)
    clock, policies = Clock(store), PolicyCache(store)
    for cid in ids:
        assert await fire(store, clock, policies, f"{cid}|first_response|due|1", 0) == "breached"
    w = WorkerContext.of(settings, store, app_plugins())
    assert not w.plugins.has_listeners
    assert await dispatch_events(w.job_ctx()) == "sent 2"
    assert await store.r.llen(store.keys.escalations) == 0
    # and a loop told that nobody listens writes none
    (quiet,) = await write_cases(store, 1, due_in=-1, tag="quiet")
    assert await fire(store, clock, policies, f"{quiet}|first_response|due|1", 0, listeners=False) == "breached"
    assert await store.r.llen(store.keys.escalations) == 0


async def test_the_idle_loop_sleeps_yet_fires_what_another_process_adds(settings, store):
    """With the only timer an hour away the loop looks a few times a second, not every 25 ms; a
    timer another client adds meanwhile, due at once, still fires."""
    await write_cases(store, 1, due_in=3600)
    loop = TimerLoop(store, Clock(store), PolicyCache(store))
    task = asyncio.create_task(loop.run())
    try:
        await eventually(lambda: _async(loop.ticks >= 1))
        start, started = loop.ticks, asyncio.get_running_loop().time()
        await asyncio.sleep(1.5)
        elapsed = asyncio.get_running_loop().time() - started
        # at most one look per IDLE_LOOK_MS (plus the one under way); never fewer is asserted
        assert loop.ticks - start <= elapsed * 1000 / IDLE_LOOK_MS + 2
        other = aioredis.from_url(settings.redis_url)
        try:
            other_store = ComplaintStore(settings.redis_prefix)
            other_store.bind(other)
            now = datetime.now(timezone.utc)
            c = replace(await store.get("cmp_ev000"), id="cmp_late", case_number="C-20261201-999999",
                        deadlines=[Deadline(kind="first_response", due=now)])
            await other.set(other_store.keys.complaint("cmp_late"), encode_complaint(c))
            await other.zadd(other_store.keys.timers, timer_members("cmp_late", c.deadlines[0]))
        finally:
            await other.aclose()
        breached = await eventually(lambda: _breached(store, "cmp_late"), timeout=10)
        assert breached
        assert not await _breached(store, "cmp_ev000")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _breached(store: ComplaintStore, cid: str) -> bool:
    return any(h.action == "sla_breached" for h in (await store.get(cid)).history)


# -- the supervisor webhook taking a batch ------------------------------------------------------


def test_the_webhook_holds_back_a_failing_case_and_skips_what_it_delivered_when_offered_again():
    """A case whose event the endpoint refuses has its later events held back, the other case's
    go out; the batch is refused; offered again, only what was not delivered is POSTed."""
    received: list[tuple[str, str]] = []
    refusing = {"on": True}

    class Endpoint(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if refusing["on"] and body["complaint_id"] == "cmp_a":
                self.send_response(503)
            else:
                received.append((body["complaint_id"], body["kind"]))
                self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    now = datetime.now(timezone.utc)
    complaints = {cid: Complaint(id=cid, case_number=f"C-20261201-00000{n}", status=ComplaintStatus.accepted,
                                 category="other", formal_complaint=False, channel="app", customer_id="cus",
                                 contact=Contact(kind="app_user", value="u"), language="en", created_at=now,
                                 updated_at=now)
                  for n, cid in enumerate(("cmp_a", "cmp_b"))}
    events = [ComplaintEvent(kind=kind, complaint_id=cid, case_number=complaints[cid].case_number,
                             at=now + timedelta(seconds=i), detail={"deadline": "first_response"})
              for i, (cid, kind) in enumerate([("cmp_a", "sla_warning"), ("cmp_b", "sla_warning"),
                                               ("cmp_a", "sla_breached"), ("cmp_b", "sla_breached")])]
    hook = NotifyWebhook(NotifySettings(url=f"http://127.0.0.1:{server.server_address[1]}/hook"))
    try:
        with pytest.raises(RuntimeError):
            asyncio.run(hook.complaint_events(events=events, complaints=complaints))
        assert received == [("cmp_b", "sla_warning"), ("cmp_b", "sla_breached")]
        refusing["on"] = False
        asyncio.run(hook.complaint_events(events=events, complaints=complaints))
        assert received[2:] == [("cmp_a", "sla_warning"), ("cmp_a", "sla_breached")]
    finally:
        server.shutdown()
