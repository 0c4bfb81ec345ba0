"""Proof under fire: the IMAP server and the providers' APIs stall, drop connections and answer
500, through a fault-injecting proxy (``tests/faultproxy.py``) in front of the real Dovecot and
the provider fakes. What must hold: retries spaced by growing backoff and bounded in number (no
storm), nothing lost, nothing taken or sent twice, a permanent refusal final at once, and a
stalled dependency never holding up the rest of the desk.

The worker's retry delays are its own (1 s for a failed acknowledgement, then 2, 4, 8 ... s).
``Backoffs`` notes each delay as arq schedules it and brings the job ``scale`` times nearer, so
minutes of backoff run in seconds; the shape is asserted on the delays the worker chose, and the
proxy's timestamps show that no attempt came earlier than its (scaled) delay.
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import tempfile
import time
from collections import defaultdict
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from msgspec.structs import replace

from adapters.email import EmailChannel, MailboxSettings, SmtpSettings
from adapters.telegram import TelegramChannel, TelegramSettings
from adapters.twilio_sms import TwilioSettings, TwilioSmsChannel
from router.store import ComplaintStore
from router.delivery import MAX_SEND_TRIES
from router.housekeeping import resend_overdue
from router.worker import create_worker
from tests.conftest import (ALICE, APP, SUPERVISOR, app_plugins, eventually, gateway_client, list_complaints,
                            run_worker)
from tests.fake_api import Outage, note_answers
from tests.fake_twilio import FakeTwilio
from tests.faultproxy import DROP, PASS, REFUSE, STALL, FaultProxy, cut
from tests.integration.test_telegram import BOT_TOKEN, SECRET, bot_fake, post_update, update
from tests.integration.test_twilio_sms import PUBLIC, SID, TOKEN, post_signed, sms_params
from tests.mailservers import Dovecot, dovecot_available, start_smtp_sink

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT_S = 1.0  # the senders' HTTP timeout here: a stall costs a second, not fifteen
WAIT_S = 20.0  # how long to wait for something that must happen (generous: a loaded 2-core machine)
NOISE_S = 1.0  # how much later than planned a try may come on a busy 2-core machine
TG_ERROR = {"ok": False, "error_code": 500, "description": "Internal Server Error"}


# -- the worker's backoffs, on a faster clock -----------------------------------------------

_BRING_NEARER = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
  return 1
end
return 0
"""


class Backoffs:
    """Watches the worker's arq queue: each time a job is put off into the future (a retry's
    backoff, a deferred send), the delay is noted (``planned``, seconds, per job id) and the job is
    brought ``scale`` times nearer."""

    def __init__(self, settings: Any, scale: float) -> None:
        self.redis = aioredis.from_url(settings.redis_url)
        self.queue = ComplaintStore(settings.redis_prefix).keys.arq_queue
        self.scale = scale
        self.planned: dict[str, list[float]] = defaultdict(list)
        self._moved: dict[str, float] = {}

    async def __aenter__(self) -> "Backoffs":
        self.task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.redis.aclose()

    async def _watch(self) -> None:
        bring_nearer = self.redis.register_script(_BRING_NEARER)
        while True:
            now = time.time() * 1000
            for job, score in await self.redis.zrangebyscore(self.queue, now + 20, "+inf", withscores=True):
                job = job.decode()
                if self._moved.get(job) == score:
                    continue  # already brought nearer; not due yet
                nearer = int(now + (score - now) / self.scale)
                if await bring_nearer(keys=[self.queue], args=[job, int(score), nearer]):
                    self.planned[job].append(round((score - now) / 1000, 2))
                    self._moved[job] = float(nearer)
            await asyncio.sleep(0.01)

    def of(self, job_suffix: str) -> list[float]:
        """The delays the worker gave the job whose id ends with ``job_suffix``."""
        found = [delays for job, delays in self.planned.items() if job.endswith(job_suffix)]
        assert len(found) == 1, (job_suffix, dict(self.planned))
        return found[0]


def intervals(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in zip(times, times[1:])]


def attempts(proxy: FaultProxy, first_path: str = "") -> list[tuple[float, float]]:
    """Each try as (start, end): one connection each, or with ``first_path`` the connections from
    a request to that path up to the next one (a try that makes several calls)."""
    if not first_path:
        return [(c.at, c.ended_at or c.at) for c in proxy.connections]
    path_of = {r.connection: r.path for r in proxy.requests}
    tries: list[tuple[float, float]] = []
    for c in proxy.connections:
        if first_path in path_of.get(c.id, ""):
            tries.append((c.at, c.ended_at or c.at))
        elif tries and "/sendMessage" not in path_of.get(c.id, ""):
            tries[-1] = (tries[-1][0], c.ended_at or c.at)
    return tries


def assert_backoff(planned: list[float], expected: list[float], tries: list[tuple[float, float]],
                   scale: float) -> None:
    """The worker chose exactly the expected (doubling) delays, and the tries kept to them: the
    wait from the end of one try to the start of the next is never shorter than its scaled
    delay (so the waits double too), nor more than a second longer (the worker's polling, a
    loaded machine)."""
    assert planned == pytest.approx(expected, abs=0.25), planned
    waits = [round(start - end, 3) for (_, end), (start, _) in zip(tries, tries[1:])]
    assert len(waits) == len(expected), (waits, expected)
    for wait, delay in zip(waits, expected):
        assert delay / scale - 0.05 <= wait <= delay / scale + NOISE_S, (waits, expected)
    if (expected[-1] - expected[0]) / scale > NOISE_S:
        assert waits[-1] > waits[0], waits
    print(f"backoff planned {planned} s; waits between tries {waits} s at 1/{scale} time")


def connections(proxy: FaultProxy, n: int, since: float = 0.0) -> Any:
    async def check() -> bool:
        return len(proxy.connections_since(since)) >= n
    check.__name__ = f"{n} connections through the proxy"
    return check


# -- the providers behind proxies -----------------------------------------------------------


@pytest.fixture
def fast(settings):
    """Settings whose worker looks at its queue every 50 ms, so backoffs brought nearer are kept."""
    return replace(settings, worker_poll_seconds=0.05, public_url=PUBLIC)


@pytest.fixture
def twilio():
    fake = FakeTwilio(SID, TOKEN).start()
    proxy = FaultProxy(fake.port, http=True).start()
    yield fake, proxy
    proxy.stop()
    fake.stop()


@pytest.fixture
def bot():
    fake = bot_fake()
    answers = note_answers(fake)
    proxy = FaultProxy(fake.server.server_address[1], http=True).start()
    yield fake, answers, proxy
    proxy.stop()
    fake.stop()


def provider_plugins(twilio_proxy: FaultProxy, bot_proxy: FaultProxy, timeout: float = CLIENT_TIMEOUT_S) -> Any:
    return app_plugins(
        TwilioSmsChannel(TwilioSettings(account_sid=SID, auth_token=TOKEN, from_number="+15005550006",
                                        api_base=twilio_proxy.url, timeout_seconds=timeout)),
        TelegramChannel(TelegramSettings(bot_token=BOT_TOKEN, secret_token=SECRET, api_base=bot_proxy.url,
                                         timeout_seconds=timeout)),
    )


def sent_texts(answers: list[Any]) -> list[str]:
    """What the bot really sent (the fake's own successful sendMessage answers)."""
    return [call.json()["text"] for call, status in answers if call.path.endswith("/sendMessage") and status == 200]


async def one_complaint(client: Any, channel: str) -> dict[str, Any]:
    (complaint,) = [c for c in await list_complaints(client) if c["channel"] == channel]
    return (await client.get(f"/v1/complaints/{complaint['id']}", headers=SUPERVISOR)).json()


# -- outbound replies -----------------------------------------------------------------------


async def test_replies_ride_out_500s_drops_and_stalls_and_go_out_exactly_once(fast, twilio, bot):
    """Twilio and Telegram each answer 500, 503, then drop a connection after the request, refuse
    one, stall one past the client's timeout, and recover: the acknowledgement goes out once on
    the sixth attempt, after backoffs of 1, 2, 4, 8 and 16 s; then an agent's reply meets a 503 /
    429 and a drop and goes out once on the third attempt (backoffs 2, 4)."""
    fake_twilio, twilio_proxy = twilio
    fake_bot, bot_answers, bot_proxy = bot
    plugins = provider_plugins(twilio_proxy, bot_proxy)
    scale = 8
    fake_twilio.fail_next = [500, 503]
    fake_bot.fail_next = [(500, TG_ERROR), (503, {**TG_ERROR, "error_code": 503})]
    for proxy in (twilio_proxy, bot_proxy):
        proxy.script(PASS, PASS, DROP, REFUSE, STALL)  # then it passes again

    async with gateway_client(fast, plugins, PUBLIC) as client:
        r = await post_signed(client, "/webhooks/twilio/sms", sms_params(body="我被重复扣款了 ¥128.50，请退款"))
        assert r.status_code == 200
        r = await post_update(client, update("The app charged me twice for one order", language="en"))
        assert r.status_code == 200
        started = time.monotonic()
        async with Backoffs(fast, scale) as backoffs:
            await asyncio.wait_for(run_worker(fast, plugins), 30)
        took = time.monotonic() - started

        sms, tg = await one_complaint(client, "twilio_sms"), await one_complaint(client, "telegram")
        for complaint in (sms, tg):
            assert [(r["kind"], r["delivery"]) for r in complaint["replies"]] == [("ack", "sent")]
        # exactly once, as the providers' own records of what they accepted show
        (created,) = fake_twilio.created_messages()
        assert sms["case_number"] in created["Body"]
        (tg_text,) = sent_texts(bot_answers)
        assert tg["case_number"] in tg_text
        for complaint, proxy in ((sms, twilio_proxy), (tg, bot_proxy)):
            assert [c.fault for c in proxy.connections] == ["pass", "pass", "drop", "refuse", "stall", "pass"]
            assert_backoff(backoffs.of(f"send:{complaint['replies'][0]['id']}"), [1, 2, 4, 8, 16], attempts(proxy),
                           scale)
        # 31 s of backoff and a 1 s stall, brought 8x nearer: a few seconds
        assert took < 31 / scale + CLIENT_TIMEOUT_S + 6, took

        # an agent's reply on each: one provider error, one dropped connection, then through
        fake_twilio.fail_next = [503]
        fake_bot.fail_next = [(429, {"ok": False, "error_code": 429, "description": "Too Many Requests",
                                     "parameters": {"retry_after": 1}})]
        for proxy in (twilio_proxy, bot_proxy):
            proxy.connections.clear()
            proxy.script(PASS, DROP)
        texts = {"twilio_sms": "退款已处理，1-3 个工作日到账。", "telegram": "Refunded, 1-3 working days."}
        for complaint in (sms, tg):
            r = await client.post(f"/v1/complaints/{complaint['id']}/replies",
                                  json={"text": texts[complaint["channel"]]}, headers=ALICE)
            assert r.status_code == 201, r.text
            complaint["agent_reply"] = r.json()["reply"]["id"]
        async with Backoffs(fast, scale) as backoffs:
            await asyncio.wait_for(run_worker(fast, plugins), 30)
        for complaint, proxy in ((sms, twilio_proxy), (tg, bot_proxy)):
            now = await one_complaint(client, complaint["channel"])
            assert [(r["kind"], r["delivery"]) for r in now["replies"]] == [("ack", "sent"), ("agent", "sent")]
            assert [c.fault for c in proxy.connections] == ["pass", "drop", "pass"]
            assert_backoff(backoffs.of(f"send:{complaint['agent_reply']}"), [2, 4], attempts(proxy), scale)
        assert [m["Body"] for m in fake_twilio.created_messages()][1:] == [texts["twilio_sms"]]
        assert sent_texts(bot_answers)[1:] == [texts["telegram"]]


async def test_a_permanent_refusal_fails_the_reply_at_once(fast, twilio, bot):
    """Twilio 400 (a request it will never take) and Telegram 403 (the bot was blocked) are final: one
    attempt each, the reply ``failed`` with the provider's reason, no retry left in the queue."""
    fake_twilio, twilio_proxy = twilio
    fake_bot, bot_answers, bot_proxy = bot
    plugins = provider_plugins(twilio_proxy, bot_proxy)
    fake_twilio.fail_next = [400]
    fake_bot.fail_next = [(403, {"ok": False, "error_code": 403,
                                 "description": "Forbidden: bot was blocked by the user"})]
    async with gateway_client(fast, plugins, PUBLIC) as client:
        await post_signed(client, "/webhooks/twilio/sms", sms_params(body="my transfer never arrived"))
        await post_update(client, update("my transfer never arrived", language="en"))
        started = time.monotonic()
        async with Backoffs(fast, 8) as backoffs:
            await asyncio.wait_for(run_worker(fast, plugins), 30)
        assert time.monotonic() - started < 5
        for channel, proxy in (("twilio_sms", twilio_proxy), ("telegram", bot_proxy)):
            (ack,) = (await one_complaint(client, channel))["replies"]
            assert ack["delivery"] == "failed" and ack["error"], ack
            assert len(proxy.connections) == 1
        assert "blocked" in (await one_complaint(client, "telegram"))["replies"][0]["error"]
        assert backoffs.planned == {}  # nothing was put off for a retry
        assert fake_twilio.created_messages() == [] and sent_texts(bot_answers) == []


async def test_an_answer_lost_after_the_provider_accepted_costs_one_repeat(fast, twilio, bot):
    """The limit of what a sender can promise: Telegram takes the message, and the connection
    dies before its answer is through. Nothing says it was sent, so it is sent again: the
    customer gets it twice (the Bot API, like Twilio's and Meta's, has no idempotency key), once
    more per lost answer and never more, and the reply ends ``sent``."""
    _, twilio_proxy = twilio
    _, bot_answers, bot_proxy = bot
    plugins = provider_plugins(twilio_proxy, bot_proxy)
    bot_proxy.script(cut(after=b"\r\n\r\n", keep=5))  # the answer's body is cut short
    async with gateway_client(fast, plugins) as client:
        await post_update(client, update("refund has not arrived after 7 days", language="en"))
        async with Backoffs(fast, 8):
            await asyncio.wait_for(run_worker(fast, plugins), 30)
        complaint = await one_complaint(client, "telegram")
        assert [(r["kind"], r["delivery"]) for r in complaint["replies"]] == [("ack", "sent")]
        assert [c.fault for c in bot_proxy.connections] == ["cut", "pass"]
        texts = sent_texts(bot_answers)
        assert len(texts) == 2 and texts[0] == texts[1] and complaint["case_number"] in texts[0]


async def test_a_provider_down_for_good_costs_a_bounded_number_of_attempts(fast, twilio, bot):
    """Twilio answers 500 to everything: the acknowledgement is tried MAX_SEND_TRIES + 1 times (the
    inline try and the send job's), backoffs doubling from 1 s to 128 s, then ends ``failed``;
    nothing is left that could try again afterwards."""
    fake_twilio, twilio_proxy = twilio
    _, _, bot_proxy = bot
    plugins = provider_plugins(twilio_proxy, bot_proxy)
    fake_twilio.fail_next = [500] * 50
    scale = 128
    async with gateway_client(fast, plugins, PUBLIC) as client:
        await post_signed(client, "/webhooks/twilio/sms", sms_params(body="card charged but order failed"))
        async with Backoffs(fast, scale) as backoffs:
            await asyncio.wait_for(run_worker(fast, plugins), 30)
        complaint = await one_complaint(client, "twilio_sms")
        (ack,) = complaint["replies"]
        assert ack["delivery"] == "failed" and "500" in ack["error"]
        tries = attempts(twilio_proxy)
        assert len(tries) == MAX_SEND_TRIES + 1 == 9
        expected = [1.0] + [2.0 ** n for n in range(1, MAX_SEND_TRIES)]  # 1, 2, 4 ... 128: 255 s in all
        assert_backoff(backoffs.of(f"send:{ack['id']}"), expected, tries, scale)
        # What could make a 10th try: the send job retrying again, or the reply left in the outbox
        # (housekeeping re-sends what is left there). The burst worker ran until its queue was
        # empty, so the 9th try's job has run to its end without queueing another; it took the
        # reply out of the outbox; and housekeeping's re-send pass, run now, finds nothing.
        store = ComplaintStore(fast.redis_prefix)
        store.bind(aioredis.from_url(fast.redis_url))
        try:
            assert [j for j in await store.r.zrange(store.keys.arq_queue, 0, -1) if b"send:" in j] == []
            assert await store.r.zscore(store.keys.outbox, f"{complaint['id']}|{ack['id']}") is None
            assert await resend_overdue(store) == 0
        finally:
            await store.r.aclose()
        assert len(twilio_proxy.connections) == 9 and fake_twilio.created_messages() == []


async def test_evidence_fetch_retries_a_5xx_a_stalled_and_a_cut_download(fast, twilio, bot):
    """A Telegram photo: the case opens and is acknowledged without waiting for it. The photo's own
    job meets getFile answering 500, then a download that stalls past the client timeout, then
    one cut mid-body, and stores it on the fourth try (backoffs 1, 2, 4 s), kept once; one
    acknowledgement, and the message processed once."""
    _, twilio_proxy = twilio
    fake_bot, bot_answers, bot_proxy = bot
    plugins = provider_plugins(twilio_proxy, bot_proxy)
    Outage(fake_bot, "/getFile", body=TG_ERROR, times=1)
    # getFile 500 | getFile, download stalls | getFile, download cut | getFile, download; the
    # acknowledgement's sendMessage meets no fault, whenever it comes
    bot_proxy.only("/getFile", "/file/")
    bot_proxy.script(PASS, PASS, STALL, PASS, cut(after=b"\r\n\r\n", keep=10))
    photo = [{"file_id": "shot1", "file_unique_id": "u1", "file_size": 68, "width": 640, "height": 480}]
    scale = 8
    async with gateway_client(fast, plugins) as client:
        await post_update(client, update(None, photo=photo, caption="Double charge, screenshot attached"))
        async with Backoffs(fast, scale) as backoffs:
            await asyncio.wait_for(run_worker(fast, plugins), 30)
        complaint = await one_complaint(client, "telegram")
        (photo_ev,) = complaint["evidence"]
        assert (photo_ev["content_type"], photo_ev["state"], photo_ev["tries"]) == ("image/jpeg", "stored", 4)
        assert [(r["kind"], r["delivery"]) for r in complaint["replies"]] == [("ack", "sent")]
        assert len(sent_texts(bot_answers)) == 1
        actions = [h["action"] for h in complaint["history"]]
        assert actions.count("received") == 1 and actions.index("routed") < actions.index("evidence_stored")
        gets = bot_proxy.requests_to("/getFile")
        assert len(gets) == 4 and [r.fault for r in bot_proxy.requests_to("/file/bot")] == ["stall", "cut", "pass"]
        assert not [job for job in backoffs.planned if "ingest:" in job]  # the message never waited
        assert_backoff(backoffs.of(f"evidence:{complaint['id']}:{photo_ev['id']}"), [1, 2, 4],
                       attempts(bot_proxy, "/getFile"), scale)


@pytest.mark.parametrize("max_jobs", [50, 4])
async def test_a_stalled_provider_does_not_hold_up_other_channels(fast, twilio, bot, max_jobs):
    """Twilio accepts connections and never answers. Eight SMS arrive (their acknowledgements
    stall, more than the default thread pool holds); a Telegram photo and an app message sent
    after them are routed, the photo kept and acknowledged, while every stalled send still hangs
    (none has timed out or been answered: nothing waited behind them). Once Twilio answers again
    every SMS gets its acknowledgement, once.
    With only 4 job slots, the cap on sends in flight per channel (a quarter of the slots)
    keeps the stalled SMS from holding every slot: the others back off and retry."""
    fake_twilio, twilio_proxy = twilio
    _, bot_answers, bot_proxy = bot
    stall_s = 30.0  # a stalled send holds its thread and slot this long, unless Twilio answers first
    plugins = provider_plugins(twilio_proxy, bot_proxy, timeout=stall_s)
    twilio_proxy.stall()
    photo = [{"file_id": "shot2", "file_unique_id": "u2", "file_size": 68, "width": 640, "height": 480}]
    # jobs may outlive a stalled send (arq would otherwise stop a held job, and free its slot,
    # before the send ends): a slot frees only when a stalled send ends
    settings = msgspec.structs.replace(fast, worker_max_jobs=max_jobs, job_timeout_seconds=int(stall_s) * 2)
    in_flight = min(8, max_jobs // 4)  # Twilio sends let through at once
    worker = create_worker(settings, burst=False, handle_signals=False, plugins=plugins)
    task = asyncio.create_task(worker.main())
    try:
        async with gateway_client(fast, plugins, PUBLIC) as client, Backoffs(fast, 8):
            numbers = [f"+86139001390{n:02d}" for n in range(8)]
            for number in numbers:
                r = await post_signed(client, "/webhooks/twilio/sms", sms_params(body="转账失败但扣款了", sender=number))
                assert r.status_code == 200
            await eventually(connections(twilio_proxy, in_flight), timeout=WAIT_S)  # the acknowledgements stall
            stalled = list(twilio_proxy.connections)
            sent_at = time.monotonic()
            await post_update(client, update(None, photo=photo, caption="charged twice", user=4242, language="en"))
            r = await client.post("/v1/messages", json={"user_id": "u-other", "text": "refund not received"},
                                  headers=APP)
            mid = r.json()["message_id"]

            async def others_done() -> bool:
                tg = await list_complaints(client, channel="telegram")
                app = (await client.get(f"/v1/messages/{mid}", headers=APP)).json()
                return bool(tg and tg[0]["evidence"] and tg[0]["evidence"][0]["state"] == "stored"
                            and tg[0]["replies"][0]["delivery"] == "sent" and app["status"] == "processed")

            await eventually(others_done, timeout=WAIT_S)  # WAIT_S < stall_s: before any stalled send could time out
            waited = time.monotonic() - sent_at
            # done while every stalled send still hangs: none ended (answered or timed out), so
            # nothing of the others can have waited for one of them to end
            assert [c.ended_at for c in stalled] == [None] * len(stalled)
            assert fake_twilio.created_messages() == [] and twilio_proxy.live >= in_flight  # Twilio still stalls
            print(f"max_jobs={max_jobs}: others routed {waited:.2f} s after, {len(stalled)} sends stalled")

            twilio_proxy.pass_through()

            async def all_sms_acknowledged() -> bool:
                sms = await list_complaints(client, channel="twilio_sms")
                return len(sms) == 8 and all(c["replies"][0]["delivery"] == "sent" for c in sms)

            await eventually(all_sms_acknowledged, timeout=20)
            assert sorted(m["To"] for m in fake_twilio.created_messages()) == numbers  # once each
            assert len(sent_texts(bot_answers)) == 1
    finally:
        await asyncio.wait_for(asyncio.gather(*worker.tasks.values(), return_exceptions=True), 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(worker.close(), return_exceptions=True)


# -- the mailbox ----------------------------------------------------------------------------

MAIL_USER = "faults@example.com"


@pytest.fixture(scope="module")
def dovecot():
    if not dovecot_available():
        pytest.skip("needs Debian's dovecot-imapd")
    root = pathlib.Path(tempfile.mkdtemp(prefix="cg-faults-"))
    root.chmod(0o755)  # Dovecot's own processes must reach the files
    server = Dovecot(root, {MAIL_USER: "secret"}).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def a_mail(n: int) -> bytes:
    return (f"From: Customer {n} <c{n}@example.com>\r\nTo: care@pay.example\r\nSubject: Refund {n}\r\n"
            f"Message-ID: <fault-{n}@example.com>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nI was charged twice for order {n}, please refund.\r\n"
            ).encode()


async def test_mailbox_behind_a_failing_link_reconnects_with_backoff_and_takes_each_mail_once(dovecot, fast):
    """The poller works a mailbox through the proxy inside a running worker. The link freezes
    while it IDLEs (noticed within poll + timeout, then reconnects spaced by a doubling backoff,
    while app messages are routed within 1.5 s), then every fetch is cut mid-body (still
    spaced, nothing half-taken); when the link passes again every mail that arrived during the
    faults becomes exactly one complaint. Each "nothing happened" is checked only once what
    could have made it happen has: two fetches cut, a later mail taken."""
    folder = "t" + fast.redis_prefix.strip(":")
    imap = dovecot.client(MAIL_USER)
    imap.create(folder)
    imap.logout()
    proxy = FaultProxy(dovecot.port).start()
    smtp, sink = start_smtp_sink()
    mailbox = MailboxSettings(host="127.0.0.1", port=proxy.port, security="none", user=MAIL_USER, password="secret",
                              folder=folder, name=folder, poll_seconds=0.5, timeout_seconds=1.0,
                              reconnect_seconds=0.2, reconnect_max_seconds=1.6)
    channel = EmailChannel(EmailChannel.Settings(
        mailboxes=[mailbox], smtp=SmtpSettings(host="127.0.0.1", port=smtp.port, security="none",
                                               from_address="care@pay.example")))
    plugins = app_plugins(channel)
    worker = create_worker(fast, burst=False, handle_signals=False, plugins=plugins)
    task = asyncio.create_task(worker.main())
    try:
        async with gateway_client(fast, plugins) as client:
            async def mail_cases(n: int) -> Any:
                async def check() -> Any:
                    cases = await list_complaints(client, channel="email")
                    return cases if len(cases) >= n else None
                check.__name__ = f"{n} mail cases"
                return await eventually(check, timeout=15)

            for n in (1, 2, 3):
                dovecot.append(MAIL_USER, a_mail(n), folder)
            await mail_cases(3)
            assert len(proxy.connections) == 1  # all three over the first connection

            # 1. the link freezes under the IDLE: noticed, and reconnects are spaced
            frozen_at = time.monotonic()
            proxy.stall()
            dovecot.append(MAIL_USER, a_mail(4), folder)
            for n in range(5):
                start = time.monotonic()
                r = await client.post("/v1/messages", json={"user_id": f"u{n}", "text": "refund please"}, headers=APP)
                mid = r.json()["message_id"]

                async def routed() -> bool:
                    return (await client.get(f"/v1/messages/{mid}", headers=APP)).json()["status"] == "processed"
                await eventually(routed, timeout=3)
                assert time.monotonic() - start < 1.5
                await asyncio.sleep(0.6)
            await eventually(connections(proxy, 3, since=frozen_at), timeout=WAIT_S)
            stalled = proxy.connections_since(frozen_at)
            # the frozen IDLE is given up after poll (0.5 s, at least 1 s) + timeout (1 s); each
            # new connection waits its 1 s for a greeting, then 0.4, 0.8, 1.6 s (the most) before
            # the next: spaced, however many there were
            assert stalled[0].at - frozen_at < 1.0 + 1.0 + 0.2 + NOISE_S
            for n, gap in enumerate(intervals([c.at for c in stalled])):
                assert gap >= 1.0 + min(1.6, 0.4 * 2 ** n) - 0.05, intervals([c.at for c in stalled])

            # 2. every fetch is cut mid-body: nothing is taken, reconnects stay spaced
            cut_at = time.monotonic()
            proxy.cut(after=b"BODY[] {", keep=40)
            dovecot.append(MAIL_USER, a_mail(5), folder)

            async def two_fetches_cut() -> bool:
                return len([c for c in proxy.connections if c.cut_at is not None]) >= 2
            await eventually(two_fetches_cut, timeout=WAIT_S)
            assert len(await list_complaints(client, channel="email")) == 3  # nothing half-taken
            cuts = proxy.connections_since(cut_at)
            # after four failures in a row (the IDLE, three greetings) the backoff is at its most
            for gap in intervals([c.at for c in cuts]):
                assert gap >= 1.6 - 0.05, intervals([c.at for c in cuts])

            # 3. the link passes again: mails 4 and 5 are taken, once each, within the backoff
            proxy.pass_through()
            dovecot.append(MAIL_USER, a_mail(6), folder)
            await mail_cases(6)
            # a second taking of mails 4-6 would come from a sync after they were taken: mail 7
            # taken means such a sync has run
            dovecot.append(MAIL_USER, a_mail(7), folder)
            cases = await mail_cases(7)

            async def all_acknowledged() -> bool:
                return len(sink.messages) >= 7
            await eventually(all_acknowledged, timeout=WAIT_S)
            cases = await list_complaints(client, channel="email")
            assert sorted(c["messages"][0]["subject"] for c in cases) == [f"Refund {n}" for n in range(1, 8)]
            assert len(sink.messages) == 7  # one acknowledgement each

            # 4. a good sync starts the backoff over: the next broken link costs 0.2 s, not 1.6 s
            dropped_at = time.monotonic()
            proxy.reset_all()
            await eventually(connections(proxy, 1, since=dropped_at), timeout=WAIT_S)
            # had it not started over it would wait its most (1.6 s) before reconnecting
            assert proxy.connections_since(dropped_at)[0].at - dropped_at < 1.6
            all_attempts = len(proxy.connections)
            print(f"imap: frozen link: reconnects at {[round(c.at - frozen_at, 2) for c in stalled]} s; "
                  f"cut fetches at {[round(c.at - cut_at, 2) for c in cuts]} s; {all_attempts} connections in all")
    finally:
        await asyncio.wait_for(asyncio.gather(*worker.tasks.values(), return_exceptions=True), 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(worker.close(), return_exceptions=True)
        proxy.stop()
        smtp.stop()
