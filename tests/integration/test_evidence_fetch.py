"""An attachment never holds the customer's words back: per channel family (Twilio MMS, a Twilio
call recording, a WhatsApp image, a Telegram photo, a WeChat image), with the provider's media
host behind a fault proxy (tests/faultproxy.py) that refuses, stalls or fronts a host answering
5xx, the complaint opens at once in its queue with the text (a recording: a note saying it is
pending) and the attachment ``pending``; the
attachment's own job tries again with backoff and shows each failure; the host comes back and
the attachment is ``stored``; a host down for good leaves it ``failed`` with the reason after the
bounded number of tries, and never a try more.

Webhooks go in over ASGI, as in the other channel tests; every provider call (acknowledgement,
media lookups and downloads) is real HTTP to the local fakes, media through the proxy. A worker
runs throughout, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import msgspec
import pytest
import redis.asyncio as aioredis

from adapters.meta import MetaChannel, MetaSettings
from adapters.telegram import TelegramChannel, TelegramSettings
from adapters.twilio_sms import TwilioSettings, TwilioSmsChannel
from adapters.twilio_voice import TwilioVoiceChannel
from adapters.wechat import WeChatChannel, WeChatSettings
from plugins.settings import Settings
from router.store import ComplaintStore, PlannedJob
from plugins.manager import GatewayPlugins
from router.worker import create_worker
from tests.conftest import SUPERVISOR, app_plugins, eventually, gateway_client, list_complaints, run_worker
from tests.fake_api import Outage
from tests.fake_twilio import FakeTwilio
from tests.faultproxy import REFUSE, STALL, FaultProxy
from tests.integration import test_meta as meta
from tests.integration import test_telegram as tg
from tests.integration import test_wechat as wx
from tests.integration.test_twilio_sms import PUBLIC, SID, TOKEN, post_signed, sms_params
from tests.integration.test_twilio_voice import call_params

pytestmark = pytest.mark.integration

CLIENT_TIMEOUT_S = 1.0  # a stalled download costs a second per try here, not the adapters' 10-30 s
WAIT_S = 20.0  # generous: a loaded 2-core machine


def fetch_settings(settings: Settings, **extra: Any) -> Settings:
    """The test's settings with a patient-but-quick evidence fetch: 10 tries, 0.2 s backoff, each
    try bounded by a second (the deployment's defaults: 10, 1 s, 30 s)."""
    return msgspec.structs.replace(settings, **{
        "worker_poll_seconds": 0.05, "public_url": PUBLIC, "evidence_fetch_tries": 10,
        "evidence_fetch_backoff_seconds": 0.2, "evidence_fetch_timeout_seconds": CLIENT_TIMEOUT_S, **extra})


# -- the channel families -------------------------------------------------------------------


@dataclass
class Family:
    """One channel with its provider fake, the media host's fault proxy, and how to write in."""

    channel: str
    plugins: Any
    proxy: FaultProxy
    media_path: str  # what a media download's path contains
    errors: Callable[[bool], None]  # the media host answers 500 (True) or serves again (False)
    post: Callable[[Any], Awaitable[Any]]  # the customer writes: one webhook
    text: str  # the complaint's first message text
    content_type: str
    magic: bytes
    acks: Callable[[], int]  # acknowledgements the provider accepted
    fake: Any = None  # the provider's fake
    subject: str | None = None  # the first message's subject line (a recording's note)
    stops: list[Callable[[], None]] = field(default_factory=list)

    def break_host(self, fault: str) -> None:
        if fault == "refuse":
            self.proxy.set_mode(REFUSE)
        elif fault == "stall":
            self.proxy.set_mode(STALL)
        else:
            self.errors(True)

    def mend(self) -> None:
        self.errors(False)
        self.proxy.pass_through()

    def media_requests(self) -> int:
        return len(self.proxy.requests_to(self.media_path))

    def stop(self) -> None:
        for stop in reversed(self.stops):
            stop()


def _proxy(port: int, *media_paths: str) -> FaultProxy:
    proxy = FaultProxy(port, http=True).start()
    proxy.only(*media_paths)  # the acknowledgements to the same host pass whatever the media do
    return proxy


def twilio_family(kind: str) -> Family:
    fake = FakeTwilio(SID, TOKEN).start()
    proxy = _proxy(fake.port, "/media/")
    account = TwilioSettings(account_sid=SID, auth_token=TOKEN, from_number="+15005550006", api_base=fake.base,
                             timeout_seconds=CLIENT_TIMEOUT_S)
    media_sid = "ME" + uuid.uuid4().hex

    def errors(on: bool) -> None:
        fake.media_status = 500 if on else 0

    if kind == "mms":
        text = "charged twice for one order, screenshot attached"

        async def post(client: Any) -> Any:
            return await post_signed(client, "/webhooks/twilio/sms", sms_params(
                body=text, NumMedia="1", MediaUrl0=f"{proxy.url}/media/{media_sid}", MediaContentType0="image/png"))

        family = Family("twilio_sms", app_plugins(TwilioSmsChannel(account)), proxy, "/media/", errors, post, text,
                        "image/png", b"\x89PNG", lambda: len(fake.created_messages()), fake)
    else:
        recording_sid = "RE" + uuid.uuid4().hex

        async def post(client: Any) -> Any:
            params = call_params("CA" + uuid.uuid4().hex, RecordingSid=recording_sid, RecordingStatus="completed",
                                 RecordingUrl=f"{proxy.url}/media/{recording_sid}", RecordingDuration="9")
            return await post_signed(client, "/webhooks/twilio/voice/recording?lang=en&category=transaction", params)

        family = Family("twilio_voice", app_plugins(TwilioVoiceChannel(account)), proxy, "/media/", errors, post,
                        "", "audio/mpeg", b"ID3", lambda: len(fake.created_messages()), fake,
                        subject="Voice message (9 s); transcript pending")
    family.stops += [fake.stop, proxy.stop]
    return family


def whatsapp_family() -> Family:
    fake = meta.graph_fake()
    proxy = _proxy(fake.server.server_address[1], "/lookaside/")
    fake.media_base = proxy.url  # the CDN the Graph API's media URLs point to
    outage = Outage(fake, "/lookaside/")
    plugins = GatewayPlugins()
    plugins.register("meta", MetaChannel(MetaSettings(
        app_secret=meta.SECRET, verify_token=meta.VERIFY, whatsapp_token=meta.WA_TOKEN,
        whatsapp_phone_number_id=meta.PNID, whatsapp_template="case_update", graph_base=fake.base)))
    plugins.check()
    text = "扣款两次的截图"

    async def post(client: Any) -> Any:
        image = {"from": "8613800138009", "id": "wamid.IMG" + uuid.uuid4().hex, "timestamp": str(int(_now())),
                 "type": "image", "image": {"caption": text, "mime_type": "image/jpeg", "id": "3234567890"}}
        return await meta.post_meta(client, meta.wa_payload(image, wa_id="8613800138009"))

    family = Family("whatsapp", plugins, proxy, "/lookaside/", lambda on: setattr(outage, "on", on), post, text,
                    "image/png", b"\x89PNG", lambda: len(fake.posts_to(rf"/{meta.PNID}/messages")))
    family.stops += [fake.stop, proxy.stop]
    return family


def telegram_family() -> Family:
    fake = tg.bot_fake()
    proxy = _proxy(fake.server.server_address[1], "/getFile", "/file/")
    outage = Outage(fake, "/file/bot", body={"ok": False, "error_code": 500, "description": "Internal Server Error"})
    plugins = GatewayPlugins()
    plugins.register("telegram", TelegramChannel(TelegramSettings(
        bot_token=tg.BOT_TOKEN, secret_token=tg.SECRET, api_base=proxy.url, timeout_seconds=CLIENT_TIMEOUT_S)))
    plugins.check()
    text = "Double charge, screenshot attached"
    photo = [{"file_id": "shot" + uuid.uuid4().hex[:8], "file_unique_id": "u9", "file_size": 68, "width": 640,
              "height": 480}]

    async def post(client: Any) -> Any:
        return await tg.post_update(client, tg.update(None, photo=photo, caption=text, language="en"))

    family = Family("telegram", plugins, proxy, "/file/bot", lambda on: setattr(outage, "on", on), post, text,
                    "image/jpeg", b"\xff\xd8\xff", lambda: len(fake.posts_to("/sendMessage")))
    family.stops += [fake.stop, proxy.stop]
    return family


def wechat_family() -> Family:
    fake = wx.wechat_fake()
    proxy = _proxy(fake.server.server_address[1], "/media/get")
    outage = Outage(fake, "/media/get", body={"errcode": -1, "errmsg": "system error"})
    plugins = GatewayPlugins()
    plugins.register("wechat", WeChatChannel(WeChatSettings(
        token=wx.TOKEN, app_id=wx.APP_ID, app_secret=wx.APP_SECRET, encoding_aes_key=wx.AES_KEY,
        api_base=proxy.url)))
    plugins.check()

    async def post(client: Any) -> Any:
        return await wx.post_plain(client, wx.xml_message("image", PicUrl="http://mmbiz.qpic.cn/x",
                                                          MediaId="image_" + uuid.uuid4().hex[:12]))

    family = Family("wechat", plugins, proxy, "/media/get", lambda on: setattr(outage, "on", on), post, "",
                    "image/jpeg", b"\xff\xd8\xff", lambda: len(fake.posts_to("/custom/send")))
    family.stops += [fake.stop, proxy.stop]
    return family


FAMILIES: dict[str, Callable[[], Family]] = {
    "twilio_mms": lambda: twilio_family("mms"),
    "twilio_recording": lambda: twilio_family("recording"),
    "whatsapp_image": whatsapp_family,
    "telegram_photo": telegram_family,
    "wechat_image": wechat_family,
}


def _now() -> float:
    import time

    return time.time()


@pytest.fixture
def family(request: pytest.FixtureRequest) -> Any:
    made = FAMILIES[request.param]()
    yield made
    made.stop()


# -- helpers --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, plugins: Any) -> AsyncIterator[Any]:
    """A worker as in production (not burst), stopped whatever happens."""
    worker = create_worker(settings, burst=False, handle_signals=False, plugins=plugins)
    task = asyncio.create_task(worker.main())
    try:
        yield worker
    finally:
        await asyncio.wait_for(asyncio.gather(*worker.tasks.values(), return_exceptions=True), 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(worker.close(), return_exceptions=True)


async def opened(client: Any, channel: str) -> dict[str, Any]:
    """The channel's one complaint, in full, once it exists."""
    async def check() -> Any:
        cases = await list_complaints(client, channel=channel)
        if not cases:
            return None
        (case,) = cases
        return (await client.get(f"/v1/complaints/{case['id']}", headers=SUPERVISOR)).json()
    check.__name__ = f"a {channel} complaint"
    return await eventually(check, timeout=WAIT_S)


async def evidence_once(client: Any, cid: str, wanted: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    async def check() -> Any:
        (ev,) = (await client.get(f"/v1/complaints/{cid}", headers=SUPERVISOR)).json()["evidence"]
        return ev if wanted(ev) else None
    check.__name__ = what
    return await eventually(check, timeout=WAIT_S)


async def queue_depth(client: Any, skill: str) -> int:
    queues = (await client.get("/v1/queues", headers=SUPERVISOR)).json()["items"]
    return next(q["depth"] for q in queues if q["skill"] == skill)


async def no_fetch_job_left(settings: Settings) -> None:
    """Wait until no evidence job is queued or running: after that, nothing can try again."""
    keys = ComplaintStore(settings.redis_prefix).keys
    r = aioredis.from_url(settings.redis_url)
    try:
        async def check() -> bool:
            return not [j for j in await r.zrange(keys.arq_queue, 0, -1) if b"evidence:" in j]
        check.__name__ = "no evidence job left in the queue"
        await eventually(check, timeout=WAIT_S)
    finally:
        await r.aclose()


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["refuse", "5xx", "stall"])
@pytest.mark.parametrize("family", list(FAMILIES), indirect=True)
async def test_the_complaint_opens_at_once_and_the_attachment_follows_when_the_host_is_back(family, fault, settings):
    """The media host refuses / answers 500 / stalls: the complaint is routed into its queue with
    the customer's text (a recording: its note), acknowledged, the attachment ``pending``; the
    attachment is tried again with backoff, each failure shown on it; the host comes back and the
    attachment is stored and served."""
    fast = fetch_settings(settings)
    family.break_host(fault)
    async with running_worker(fast, family.plugins), gateway_client(fast, family.plugins, PUBLIC) as client:
        r = await family.post(client)
        assert r.status_code in (200, 204), r.text
        c = await opened(client, family.channel)  # while the media host is still down
        assert c["status"] == "accepted" and c["skill"] and await queue_depth(client, c["skill"]) == 1
        assert (c["messages"][0]["text"], c["messages"][0]["subject"]) == (family.text, family.subject)
        (ev,) = c["evidence"]
        assert ev["state"] == "pending" and ev["sha256"] == "" and ev["id"].startswith("ev_")
        missing = await client.get(f"/v1/complaints/{c['id']}/evidence/{ev['id']}", headers=SUPERVISOR)
        assert missing.status_code == 404 and missing.json()["code"] == "evidence_missing"

        ev = await evidence_once(client, c["id"], lambda e: e["tries"] >= 2, "two failed tries")
        assert ev["state"] == "pending" and ev["error"], ev  # the agent sees it is being tried, and why

        async def acknowledged() -> bool:
            return family.acks() == 1
        await eventually(acknowledged, timeout=WAIT_S)  # the customer has the case number

        family.mend()
        ev = await evidence_once(client, c["id"], lambda e: e["state"] != "pending", "evidence settled")
        assert ev["state"] == "stored" and ev["error"] is None, ev
        assert ev["content_type"] == family.content_type and len(ev["sha256"]) == 64 and ev["remote_url"] is None
        got = await client.get(f"/v1/complaints/{c['id']}/evidence/{ev['id']}", headers=SUPERVISOR)
        assert got.status_code == 200 and got.content.startswith(family.magic)
        c = (await client.get(f"/v1/complaints/{c['id']}", headers=SUPERVISOR)).json()
        assert [h["detail"]["evidence_id"] for h in c["history"] if h["action"] == "evidence_stored"] == [ev["id"]]
        assert len(await list_complaints(client)) == 1 and family.acks() == 1
        print(f"{family.channel} / {fault}: stored after {ev['tries']} tries")


@pytest.mark.parametrize("family", list(FAMILIES), indirect=True)
async def test_a_media_host_down_for_good_fails_the_attachment_after_the_bounded_tries(family, settings):
    """The media host answers 500 to every download: after ``evidence_fetch_tries`` (3 here) the
    attachment is ``failed`` with the provider's answer as the reason; once its job is over,
    exactly 3 downloads were asked for."""
    fast = fetch_settings(settings, evidence_fetch_tries=3)
    family.break_host("5xx")
    async with running_worker(fast, family.plugins), gateway_client(fast, family.plugins, PUBLIC) as client:
        await family.post(client)
        c = await opened(client, family.channel)
        assert (c["messages"][0]["text"], c["messages"][0]["subject"]) == (family.text, family.subject)
        assert [e["state"] for e in c["evidence"]] == ["pending"]
        ev = await evidence_once(client, c["id"], lambda e: e["state"] != "pending", "evidence settled")
        assert ev["state"] == "failed" and ev["tries"] == 3 and "answered 500" in ev["error"], ev
        await no_fetch_job_left(fast)  # the last try has run and nothing is left to try again
        assert family.media_requests() == 3
        c = (await client.get(f"/v1/complaints/{c['id']}", headers=SUPERVISOR)).json()
        (failed,) = [h for h in c["history"] if h["action"] == "evidence_failed"]
        assert failed["detail"]["evidence_id"] == ev["id"] and "answered 500" in failed["detail"]["reason"]
        assert c["status"] == "accepted" and family.acks() == 1


@pytest.mark.parametrize("family", ["twilio_mms"], indirect=True)
@pytest.mark.parametrize("case", ["too_large", "gone"])
async def test_a_refused_or_vanished_file_fails_at_once(family, case, settings):
    """The blob store refuses the file (over the size limit), or the provider says the media is
    gone (404): ``failed`` on the first try with the reason, and no second try."""
    fast = fetch_settings(settings, **({"max_evidence_bytes": 16} if case == "too_large" else {}))
    if case == "gone":
        family.fake.media_status = 404
    async with running_worker(fast, family.plugins), gateway_client(fast, family.plugins, PUBLIC) as client:
        await family.post(client)
        c = await opened(client, family.channel)
        ev = await evidence_once(client, c["id"], lambda e: e["state"] != "pending", "evidence settled")
        assert ev["state"] == "failed" and ev["tries"] == 1, ev
        assert ev["error"].startswith("evidence_too_large" if case == "too_large" else "not available"), ev
        await no_fetch_job_left(fast)
        assert family.media_requests() == 1


@pytest.mark.parametrize("family", ["twilio_mms"], indirect=True)
async def test_the_fetch_job_run_again_changes_nothing(family, settings):
    """arq runs a job at least once: the same fetch job again (a worker that died before finishing
    it) finds the attachment stored and neither fetches nor writes anything."""
    fast = fetch_settings(settings)
    async with gateway_client(fast, family.plugins, PUBLIC) as client:
        await family.post(client)
        await run_worker(fast, family.plugins)
        before = await opened(client, family.channel)
        (ev,) = before["evidence"]
        assert (ev["state"], ev["tries"]) == ("stored", 1) and family.media_requests() == 1
        store = ComplaintStore(fast.redis_prefix)
        store.bind(aioredis.from_url(fast.redis_url))
        try:
            await store.enqueue(PlannedJob("fetch_evidence", f"evidence:{before['id']}:{ev['id']}",
                                           (before["id"], ev["id"], family.channel)))
            assert await run_worker(fast, family.plugins) == 1
        finally:
            await store.r.aclose()
        after = (await client.get(f"/v1/complaints/{before['id']}", headers=SUPERVISOR)).json()
        assert after == before and family.media_requests() == 1


async def test_a_transcript_that_comes_later_joins_the_case_while_the_recording_is_still_pending(settings):
    """A call: the recording's host refuses; the case opens with the recording note, the
    recording pending. The transcript arrives: it joins the same case as an edit of the note. The
    host comes back: the recording is stored. One case, one acknowledgement."""
    family = twilio_family("recording")
    try:
        fast = fetch_settings(settings)
        family.break_host("refuse")
        call = "CA" + uuid.uuid4().hex
        recording_sid = "RE" + uuid.uuid4().hex
        query = "?lang=en&category=fee_dispute"
        async with running_worker(fast, family.plugins), gateway_client(fast, family.plugins, PUBLIC) as client:
            recording = call_params(call, RecordingSid=recording_sid, RecordingStatus="completed",
                                    RecordingUrl=f"{family.proxy.url}/media/{recording_sid}", RecordingDuration="31")
            assert (await post_signed(client, "/webhooks/twilio/voice/recording" + query, recording)).status_code == 204
            c = await opened(client, "twilio_voice")
            (note,) = c["messages"]
            assert (note["text"], note["subject"]) == ("", "Voice message (31 s); transcript pending")
            assert c["category"] == "fee_dispute" and [e["state"] for e in c["evidence"]] == ["pending"]

            words = "You charged me a fee twice for one transfer, please refund it"
            transcription = call_params(call, TranscriptionSid="TR" + uuid.uuid4().hex, TranscriptionStatus="completed",
                                        TranscriptionText=words, RecordingSid=recording_sid)
            assert (await post_signed(client, "/webhooks/twilio/voice/transcription" + query,
                                      transcription)).status_code == 204

            async def joined() -> Any:
                now = (await client.get(f"/v1/complaints/{c['id']}", headers=SUPERVISOR)).json()
                return now if len(now["messages"]) == 2 else None
            c = await eventually(joined, timeout=WAIT_S)
            assert c["messages"][1]["text"] == words and c["messages"][1]["edit_of"] == note["message_id"]
            assert c["evidence"][0]["state"] == "pending"

            family.mend()
            ev = await evidence_once(client, c["id"], lambda e: e["state"] == "stored", "recording stored")
            assert ev["content_type"] == "audio/mpeg"
            assert len(await list_complaints(client)) == 1 and family.acks() == 1
    finally:
        family.stop()



@pytest.mark.parametrize("family", ["twilio_mms"], indirect=True)
async def test_an_attachment_on_a_repeat_report_is_fetched_too(family, settings):
    """The customer writes again with a second screenshot while the case is open: the message
    joins the case as a repeat, and its attachment is fetched by its own job like the first one
    (before, it stayed ``pending`` for ever: no job was queued for it)."""
    fast = fetch_settings(settings)
    async with running_worker(fast, family.plugins), gateway_client(fast, family.plugins, PUBLIC) as client:
        await family.post(client)
        c = await opened(client, family.channel)
        await evidence_once(client, c["id"], lambda e: e["state"] == "stored", "first attachment stored")
        await family.post(client)  # the same words again, another screenshot: a repeat report

        async def both_stored() -> Any:
            now = (await client.get(f"/v1/complaints/{c['id']}", headers=SUPERVISOR)).json()
            states = [e["state"] for e in now["evidence"]]
            return now if states == ["stored", "stored"] else None
        both_stored.__name__ = "both attachments stored on the one case"
        now = await eventually(both_stored, timeout=WAIT_S)
        assert now["repeat_count"] == 1 and len(await list_complaints(client)) == 1
        assert family.media_requests() == 2
