"""A Telegram bot: the updates Telegram posts, with the secret token it sends; replies through the
Bot API's shape to a local fake."""

from __future__ import annotations

import json
import time

import pytest

from adapters.telegram import TelegramChannel, TelegramSettings
from plugins.manager import GatewayPlugins
from tests.conftest import SUPERVISOR, gateway_client, run_worker, stored_keys, list_complaints
from tests.fake_api import FakeApi

pytestmark = pytest.mark.integration

BOT_TOKEN, SECRET = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "tg-secret-token-1"
USER = 987654321
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def bot_fake() -> FakeApi:
    fake = FakeApi()
    counter = iter(range(1000, 100000))

    def send(call, match):
        body = call.json()
        return 200, {"ok": True, "result": {"message_id": next(counter), "date": int(time.time()),
                                            "chat": {"id": body["chat_id"], "type": "private"},
                                            "text": body["text"]}}, "application/json"

    def get_file(call, match):
        return 200, {"ok": True, "result": {"file_id": call.query["file_id"], "file_unique_id": "u1",
                                            "file_size": len(JPEG), "file_path": f"photos/{call.query['file_id']}.jpg"}}, \
            "application/json"

    fake.route("POST", rf"/bot{BOT_TOKEN}/sendMessage", send)
    fake.route("GET", rf"/bot{BOT_TOKEN}/getFile", get_file)
    fake.route("GET", rf"/file/bot{BOT_TOKEN}/photos/(\w+)\.jpg", lambda call, m: (200, JPEG, "image/jpeg"))
    return fake.start()


@pytest.fixture
def bot():
    fake = bot_fake()
    yield fake
    fake.stop()


@pytest.fixture
def tg_plugins(bot):
    plugins = GatewayPlugins()
    plugins.register("telegram", TelegramChannel(TelegramSettings(bot_token=BOT_TOKEN, secret_token=SECRET,
                                                                  api_base=bot.base)))
    plugins.check()
    return plugins


@pytest.fixture
async def client(settings, tg_plugins):
    async with gateway_client(settings, tg_plugins) as c:
        yield c


_update_ids = iter(range(10_000, 1_000_000))


def update(text=None, *, message_id=1, user=USER, edited=False, language="zh-hans", update_id=None, **extra):
    message = {
        "message_id": message_id,
        "from": {"id": user, "is_bot": False, "first_name": "Wei", "last_name": "Zhang", "username": "zw",
                 "language_code": language},
        "chat": {"id": user, "first_name": "Wei", "last_name": "Zhang", "username": "zw", "type": "private"},
        "date": int(time.time()) - (60 if edited else 0),
    }
    if text is not None:
        message["text"] = text
    if edited:
        message["edit_date"] = int(time.time())
    message.update(extra)
    return {"update_id": update_id or next(_update_ids), ("edited_message" if edited else "message"): message}


async def post_update(client, payload, secret=SECRET):
    body = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    return await client.post("/webhooks/telegram", content=body, headers=headers)


async def test_text_becomes_one_complaint_and_the_ack_goes_by_send_message(client, settings, tg_plugins, bot):
    payload = update("转账显示成功但对方没有收到，金额500元")
    for _ in range(5):  # Telegram re-delivers an update until it gets a 2xx
        r = await post_update(client, payload)
        assert r.status_code == 200
    await run_worker(settings, tg_plugins)
    (c,) = await list_complaints(client)
    assert (c["channel"], c["contact"]["kind"], c["contact"]["value"]) == ("telegram", "telegram", str(USER))
    (sent,) = bot.posts_to("/sendMessage")
    assert sent.json()["chat_id"] == USER and c["case_number"] in sent.json()["text"]
    assert c["replies"][0]["provider_message_id"]


async def test_photo_largest_size_is_the_evidence(client, settings, tg_plugins, bot):
    photo = [{"file_id": "small", "file_unique_id": "a", "file_size": 1200, "width": 90, "height": 67},
             {"file_id": "medium", "file_unique_id": "b", "file_size": 15000, "width": 320, "height": 240},
             {"file_id": "large", "file_unique_id": "c", "file_size": 98000, "width": 1280, "height": 960}]
    r = await post_update(client, update(None, photo=photo, caption="Charged twice, see screenshot"))
    assert r.status_code == 200 and not bot.calls  # nothing fetched inside the webhook
    await run_worker(settings, tg_plugins)
    (c,) = await list_complaints(client)
    assert c["messages"][0]["text"] == "Charged twice, see screenshot" and c["language"] == "en"
    assert [(e["content_type"], e["state"]) for e in c["evidence"]] == [("image/jpeg", "stored")]
    (get_file,) = [call for call in bot.calls if call.path.endswith("/getFile")]
    assert get_file.query["file_id"] == "large"


async def test_an_edit_updates_the_text_history_not_a_new_complaint(client, settings, tg_plugins, bot):
    await post_update(client, update("I was charged 50 USD twice", message_id=7))
    await run_worker(settings, tg_plugins)
    edit = update("I was charged 80 USD twice (not 50)", message_id=7, edited=True)
    for _ in range(3):
        assert (await post_update(client, edit)).status_code == 200
    await run_worker(settings, tg_plugins)
    (c,) = await list_complaints(client)
    first, second = c["messages"]
    assert second["edit_of"] == first["message_id"] and "80 USD" in second["text"]
    assert [h["action"] for h in c["history"]].count("message_edited") == 1
    assert len(bot.posts_to("/sendMessage")) == 1  # one acknowledgement, none for the edit


async def test_an_edit_that_beats_its_original_to_the_worker_still_joins_it(client, settings, tg_plugins, bot):
    await post_update(client, update("余额不对，少了两百块", message_id=9))
    await post_update(client, update("余额不对，少了三百块", message_id=9, edited=True))
    await run_worker(settings, tg_plugins)
    (c,) = await list_complaints(client)
    assert len(c["messages"]) == 2


async def test_commands_are_answered_in_the_webhook_response(client, settings, tg_plugins, bot):
    r = await post_update(client, update("/start"))
    assert r.json()["method"] == "sendMessage" and r.json()["chat_id"] == USER and "案件编号" in r.json()["text"]
    await post_update(client, update("Withdrawal stuck for 3 days", message_id=2, language="en"))
    await run_worker(settings, tg_plugins)
    (c,) = await list_complaints(client)
    r = await post_update(client, update(f"/status {c['case_number']}", message_id=3, language="en"))
    assert c["case_number"] in r.json()["text"] and "waiting for an agent" in r.json()["text"]
    # someone else asking about this case learns nothing
    r = await post_update(client, update(f"/status {c['case_number']}", user=111, message_id=1, language="en"))
    assert "could not find" in r.json()["text"]
    r = await post_update(client, update("/status", message_id=4))
    assert "用法" in r.json()["text"]
    assert len(await list_complaints(client)) == 1  # commands are not complaints


@pytest.mark.parametrize("secret", [None, "wrong", ""])
async def test_wrong_or_missing_secret_is_refused_with_nothing_stored(client, settings, secret):
    before = await stored_keys(settings)
    r = await post_update(client, update("hello"), secret=secret)
    assert r.status_code == 403 and r.json()["code"] == "secret_token_invalid"
    assert await stored_keys(settings) == before


async def test_a_malformed_update_is_quarantined_and_does_not_block_the_next(client, settings, tg_plugins):
    r = await post_update(client, {"update_id": 55, "message": {"chat": {"type": "private"}, "text": "x"}})
    assert r.status_code == 200
    r = await post_update(client, b"\xff\xfe not json")
    assert r.status_code == 200
    r = await post_update(client, update("the next one is fine", message_id=5))
    await run_worker(settings, tg_plugins)
    assert len(await list_complaints(client)) == 1
    assert len((await client.get("/v1/quarantine", headers=SUPERVISOR)).json()["items"]) == 2


async def test_blocked_bot_is_final_and_rate_limit_is_retried(client, settings, tg_plugins, bot):
    bot.fail_next = [(429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
                            "parameters": {"retry_after": 1}})]
    await post_update(client, update("app crashes when I pay", message_id=11, language="en"))
    await run_worker(settings, tg_plugins)
    (c,) = await list_complaints(client)
    assert c["replies"][0]["delivery"] == "sent"  # the retry went through
    bot.fail_next = [(403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"})]
    await post_update(client, update("another problem", message_id=1, user=222, language="en"))
    await run_worker(settings, tg_plugins)
    blocked = next(c for c in await list_complaints(client) if c["contact"]["value"] == "222")
    assert blocked["replies"][0]["delivery"] == "failed" and "blocked" in blocked["replies"][0]["error"]
