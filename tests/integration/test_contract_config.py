"""The configuration names of the public contract (shared/design.md) work as written, through the
project's own plugins.toml: a deployment that sets only ``TELEGRAM_SECRET_TOKEN``,
``META_ACCESS_TOKEN``, ``WECHAT_APPID`` / ``WECHAT_APPSECRET`` takes signed messages and sends
replies. The earlier names (``TELEGRAM_SECRET``, ``WECHAT_APP_ID`` / ``WECHAT_APP_SECRET``,
``META_WHATSAPP_TOKEN`` / ``META_PAGE_TOKEN``) still work, and where both are set the contract's
name, or for Meta the more specific token, wins."""

from __future__ import annotations

import json
import uuid

import pytest

from plugins.manager import GatewayPlugins
from tests.conftest import ROOT, gateway_client, list_complaints, run_worker
from tests.fake_api import FakeApi
from tests.integration import test_meta as meta
from tests.integration import test_telegram as tg
from tests.integration import test_wechat as wx

pytestmark = pytest.mark.integration


def load(**env: str) -> GatewayPlugins:
    """The repository's plugins.toml read with exactly this environment (and nothing else)."""
    return GatewayPlugins.load(ROOT / "plugins.toml", autoload=False, env=env)


# -- Telegram -------------------------------------------------------------------------------


@pytest.fixture
def bot():
    fake = tg.bot_fake()
    yield fake
    fake.stop()


@pytest.mark.parametrize("names", ["contract", "earlier", "both"])
async def test_telegram_takes_an_update_signed_with_the_configured_secret(settings, bot, names):
    env = {"TELEGRAM_BOT_TOKEN": tg.BOT_TOKEN, "TELEGRAM_API_BASE": bot.base}
    if names in ("contract", "both"):
        env["TELEGRAM_SECRET_TOKEN"] = tg.SECRET
    if names in ("earlier", "both"):
        env["TELEGRAM_SECRET"] = tg.SECRET if names == "earlier" else "an-older-secret"
    plugins = load(**env)
    async with gateway_client(settings, plugins) as client:
        r = await tg.post_update(client, tg.update("转账显示成功但对方没有收到，金额500元"))
        assert r.status_code == 200, r.text
        if names == "both":  # the contract's name wins; the other secret is refused
            r = await tg.post_update(client, tg.update("hello", message_id=2), secret="an-older-secret")
            assert r.status_code == 403 and r.json()["code"] == "secret_token_invalid"
        await run_worker(settings, plugins)
        (c,) = await list_complaints(client)
    (sent,) = bot.posts_to("/sendMessage")
    assert c["channel"] == "telegram" and c["case_number"] in sent.json()["text"]


async def test_telegram_without_a_secret_names_the_contract_variable(settings, bot):
    async with gateway_client(settings, load(TELEGRAM_BOT_TOKEN=tg.BOT_TOKEN)) as client:
        r = await tg.post_update(client, tg.update("hello"))
    assert r.status_code == 503 and r.json()["code"] == "channel_not_configured"
    assert "TELEGRAM_SECRET_TOKEN" in r.json()["detail"]


# -- WeChat ---------------------------------------------------------------------------------


@pytest.fixture
def weixin():
    fake = wx.wechat_fake()
    yield fake
    fake.stop()


@pytest.mark.parametrize("names", ["contract", "earlier", "both"])
async def test_wechat_safe_mode_message_is_taken_and_acknowledged(settings, weixin, names):
    env = {"WECHAT_TOKEN": wx.TOKEN, "WECHAT_AES_KEY": wx.AES_KEY, "WECHAT_API_BASE": weixin.base}
    if names in ("contract", "both"):
        env.update(WECHAT_APPID=wx.APP_ID, WECHAT_APPSECRET=wx.APP_SECRET)
    if names == "earlier":
        env.update(WECHAT_APP_ID=wx.APP_ID, WECHAT_APP_SECRET=wx.APP_SECRET)
    if names == "both":  # the contract's names win: the fake answers only the right AppID + secret
        env.update(WECHAT_APP_ID="wx_an_older_account", WECHAT_APP_SECRET="an-older-secret")
    plugins = load(**env)
    async with gateway_client(settings, plugins) as client:
        r = await wx.post_safe(client, wx.xml_message(Content="提现失败但余额已扣除"))
        assert r.status_code == 200 and r.text == "success", r.text
        await run_worker(settings, plugins)
        (c,) = await list_complaints(client)
    assert c["channel"] == "wechat" and c["messages"][0]["text"] == "提现失败但余额已扣除"
    (sent,) = weixin.posts_to("/cgi-bin/message/custom/send")
    assert c["case_number"] in sent.json()["text"]["content"]
    assert sent.query["access_token"] == weixin.tokens_issued[-1]


# -- Meta -----------------------------------------------------------------------------------


@pytest.fixture
def graph():
    """A Graph API that takes any bearer token and records which one each send used."""
    fake = FakeApi()
    fake.route("POST", rf"/v21.0/{meta.PNID}/messages", lambda call, m: (200, {
        "messaging_product": "whatsapp", "messages": [{"id": "wamid.OUT" + uuid.uuid4().hex}]}, "application/json"))
    fake.route("POST", r"/v21.0/me/messages", lambda call, m: (200, {
        "recipient_id": call.json()["recipient"]["id"], "message_id": "m_OUT" + uuid.uuid4().hex}, "application/json"))
    yield fake.start()
    fake.stop()


def meta_env(graph: FakeApi, **tokens: str) -> dict[str, str]:
    return {"META_APP_SECRET": meta.SECRET, "META_VERIFY_TOKEN": meta.VERIFY, "META_GRAPH_BASE": graph.base,
            "META_WHATSAPP_PHONE_NUMBER_ID": meta.PNID, **tokens}


@pytest.mark.parametrize("specific", [False, True])
async def test_meta_access_token_is_the_bearer_for_whatsapp_and_page_sends(settings, graph, specific):
    tokens = {"META_ACCESS_TOKEN": "meta-access-token-1"}
    if specific:  # a more specific token wins for its product
        tokens.update(META_WHATSAPP_TOKEN="wa-only-token", META_PAGE_TOKEN="page-only-token")
    plugins = load(**meta_env(graph, **tokens))
    async with gateway_client(settings, plugins) as client:
        wa = meta.wa_payload(meta.wa_text("我被重复扣款了128元，请退款"))
        page = {"object": "page", "entry": [meta.page_event("page", "6543210987654321", "refund never arrived")]}
        for payload in (wa, page):
            r = await meta.post_meta(client, payload)
            assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        await run_worker(settings, plugins)
        items = {c["channel"]: c for c in await list_complaints(client)}
    (wa_sent,) = graph.posts_to(rf"/{meta.PNID}/messages")
    (page_sent,) = graph.posts_to(r"/me/messages")
    assert items["whatsapp"]["case_number"] in wa_sent.json()["text"]["body"]
    assert items["messenger"]["case_number"] in page_sent.json()["message"]["text"]
    expected = ("wa-only-token", "page-only-token") if specific else ("meta-access-token-1",) * 2
    assert (wa_sent.headers["Authorization"], page_sent.headers["Authorization"]) == \
        tuple(f"Bearer {t}" for t in expected)


async def test_meta_earlier_names_alone_still_send(settings, graph):
    plugins = load(**meta_env(graph, META_WHATSAPP_TOKEN="wa-only-token"))
    async with gateway_client(settings, plugins) as client:
        r = await meta.post_meta(client, meta.wa_payload(meta.wa_text("payment failed but money was taken")))
        assert r.status_code == 200, r.text
        await run_worker(settings, plugins)
    (sent,) = graph.posts_to(rf"/{meta.PNID}/messages")
    assert sent.headers["Authorization"] == "Bearer wa-only-token"
    assert json.loads(sent.body)["type"] == "text"
