"""A WeChat official account: URL verification, plain and safe-mode (AES) messages exactly as
WeChat posts them and signs them, passive replies, and the customer-service API with a shared
access token, against a local fake of api.weixin.qq.com."""

from __future__ import annotations

import asyncio
import base64
import os
import time

import pytest

from adapters.wechat import AccessTokens, Crypto, WeChatChannel, WeChatSettings, parse_xml, sha1_signature
from plugins.manager import GatewayPlugins
from tests.conftest import SUPERVISOR, gateway_client, run_worker, stored_keys, list_complaints
from tests.fake_api import FakeApi

pytestmark = pytest.mark.integration

TOKEN, APP_ID, APP_SECRET = "wxtoken2026", "wx5823bf96d3bd56c7", "appsecret-0001"
AES_KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")  # 43 characters, as WeChat gives it
ACCOUNT, OPENID = "gh_4f2a9e2c6f1b", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
AMR = b"#!AMR\n" + b"\x00" * 64


def wechat_fake() -> FakeApi:
    fake = FakeApi()
    fake.tokens_issued = []

    def token(call, match):
        if call.query.get("appid") != APP_ID or call.query.get("secret") != APP_SECRET:
            return 200, {"errcode": 40013, "errmsg": "invalid appid"}, "application/json"
        issued = "ACCESS_TOKEN_" + os.urandom(6).hex()
        fake.tokens_issued.append(issued)
        return 200, {"access_token": issued, "expires_in": 7200}, "application/json"

    def valid(call) -> bool:
        return bool(fake.tokens_issued) and call.query.get("access_token") == fake.tokens_issued[-1]

    def custom_send(call, match):
        if not valid(call):
            return 200, {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}, "application/json"
        return 200, {"errcode": 0, "errmsg": "ok"}, "application/json"

    def media_get(call, match):
        if not valid(call):
            return 200, {"errcode": 40001, "errmsg": "invalid credential"}, "application/json"
        if call.query["media_id"].startswith("expired"):
            return 200, {"errcode": 40007, "errmsg": "invalid media_id"}, "text/plain"
        return 200, AMR if call.query["media_id"].startswith("voice") else b"\xff\xd8\xff\xe0" + b"\x00" * 40, \
            "audio/amr" if call.query["media_id"].startswith("voice") else "image/jpeg"

    fake.route("GET", r"/cgi-bin/token", token)
    fake.route("POST", r"/cgi-bin/message/custom/send", custom_send)
    fake.route("GET", r"/cgi-bin/media/get", media_get)
    return fake.start()


@pytest.fixture
def weixin():
    fake = wechat_fake()
    yield fake
    fake.stop()


@pytest.fixture
def wx_plugins(weixin):
    plugins = GatewayPlugins()
    plugins.register("wechat", WeChatChannel(WeChatSettings(token=TOKEN, app_id=APP_ID, app_secret=APP_SECRET,
                                                            encoding_aes_key=AES_KEY, api_base=weixin.base)))
    plugins.check()
    return plugins


@pytest.fixture
async def client(settings, wx_plugins):
    async with gateway_client(settings, wx_plugins) as c:
        yield c


def signed_query(timestamp=None, nonce=None, **extra):
    timestamp = str(timestamp or int(time.time()))
    nonce = nonce or str(int.from_bytes(os.urandom(4), "big"))
    return {"signature": sha1_signature(TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce, **extra}


_msg_ids = iter(range(24_000_000_000_000_000, 25_000_000_000_000_000, 7919))


def xml_message(msg_type="text", openid=OPENID, created=None, msg_id=None, **fields):
    body = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items())
    msg_id_xml = "" if msg_type == "event" else f"<MsgId>{msg_id or next(_msg_ids)}</MsgId>"
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{created or int(time.time())}</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>"
            f"{body}{msg_id_xml}</xml>")


async def post_plain(client, xml, query=None):
    query = query or signed_query(openid=OPENID)
    return await client.post("/webhooks/wechat", params=query, content=xml.encode(),
                             headers={"Content-Type": "text/xml"})


async def post_safe(client, xml, *, app_id=APP_ID, tamper=False):
    """Safe mode as WeChat does it: the message encrypted, msg_signature over the ciphertext."""
    encrypted = Crypto(AES_KEY, app_id).encrypt(xml)
    query = signed_query(openid=OPENID, encrypt_type="aes")
    query["msg_signature"] = sha1_signature(TOKEN, query["timestamp"], query["nonce"], encrypted)
    if tamper:
        encrypted = encrypted[:10] + ("A" if encrypted[10] != "A" else "B") + encrypted[11:]
    body = f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    return await client.post("/webhooks/wechat", params=query, content=body.encode(),
                              headers={"Content-Type": "text/xml"})


async def test_url_verification_echoes_only_when_signed_and_fresh(client):
    r = await client.get("/webhooks/wechat", params=signed_query(echostr="5837397520665433"))
    assert r.status_code == 200 and r.text == "5837397520665433"
    bad = signed_query(echostr="1")
    bad["signature"] = "0" * 40
    assert (await client.get("/webhooks/wechat", params=bad)).status_code == 403
    stale = signed_query(timestamp=int(time.time()) - 3600, echostr="1")
    r = await client.get("/webhooks/wechat", params=stale)
    assert r.status_code == 403 and r.json()["code"] == "timestamp_stale"


async def test_plain_text_becomes_one_complaint_and_the_ack_uses_the_service_api(client, settings, wx_plugins, weixin):
    xml = xml_message(Content="我的银行卡被扣了两次钱，一共256元，请尽快处理")
    query = signed_query(openid=OPENID)
    for _ in range(5):  # WeChat retries after 5 s, three times in all; replays within the window too
        r = await post_plain(client, xml, query)
        assert r.status_code == 200 and r.text == "success"
    await run_worker(settings, wx_plugins)
    (c,) = await list_complaints(client)
    assert (c["channel"], c["contact"]["kind"], c["contact"]["value"]) == ("wechat", "wechat_openid", OPENID)
    assert c["language"] == "zh" and c["amount"]["value"] == "256.00"
    (sent,) = weixin.posts_to("/cgi-bin/message/custom/send")
    body = sent.json()
    assert body["touser"] == OPENID and body["msgtype"] == "text" and c["case_number"] in body["text"]["content"]
    assert "进度" in body["text"]["content"] and "\\u" not in sent.body.decode()  # UTF-8, not escapes
    assert sent.query["access_token"] == weixin.tokens_issued[0] and len(weixin.tokens_issued) == 1


async def test_safe_mode_message_and_encrypted_passive_reply(client, settings, wx_plugins, weixin):
    r = await post_safe(client, xml_message(Content="提现失败但余额已扣除"))
    assert r.status_code == 200 and r.text == "success"
    await run_worker(settings, wx_plugins)
    (c,) = await list_complaints(client)
    assert c["messages"][0]["text"] == "提现失败但余额已扣除"
    # a subscription is answered with a passive welcome, encrypted for the account
    r = await post_safe(client, xml_message("event", Event="subscribe"))
    reply = parse_xml(r.content)
    assert reply["MsgSignature"] == sha1_signature(TOKEN, reply["TimeStamp"], reply["Nonce"], reply["Encrypt"])
    inner = parse_xml(Crypto(AES_KEY, APP_ID).decrypt(reply["Encrypt"]))
    assert inner["ToUserName"] == OPENID and inner["FromUserName"] == ACCOUNT and inner["MsgType"] == "text"
    assert "案件编号" in inner["Content"]
    # the customer asks for the status: a passive reply at once
    r = await post_safe(client, xml_message(Content=f"进度 {c['case_number']}"))
    inner = parse_xml(Crypto(AES_KEY, APP_ID).decrypt(parse_xml(r.content)["Encrypt"]))
    assert c["case_number"] in inner["Content"] and "已受理" in inner["Content"]
    assert len(await list_complaints(client)) == 1


async def test_image_and_voice_with_recognition(client, settings, wx_plugins, weixin):
    await post_plain(client, xml_message("image", PicUrl="http://mmbiz.qpic.cn/x", MediaId="image_media_1"))
    await post_plain(client, xml_message("voice", openid="oUpF8_other", MediaId="voice_media_1", Format="amr",
                                         Recognition="我的转账没有到账，请帮我查一下"))
    assert not [c for c in weixin.calls if c.path.endswith("/media/get")]  # nothing fetched in the webhook
    await run_worker(settings, wx_plugins)
    items = {c["contact"]["value"]: c for c in await list_complaints(client)}
    image, voice = items[OPENID], items["oUpF8_other"]
    assert [(e["content_type"], e["state"]) for e in image["evidence"]] == [("image/jpeg", "stored")]
    assert voice["messages"][0]["text"] == "我的转账没有到账，请帮我查一下"
    assert [e["content_type"] for e in voice["evidence"]] == ["audio/amr"]


async def test_an_expired_media_id_is_failed_evidence_on_an_open_case(client, settings, wx_plugins, weixin):
    """WeChat keeps temporary media 3 days: a media id it no longer knows (40007) is final. The case
    stands, the image is ``failed`` with the reason after one try."""
    await post_plain(client, xml_message("image", PicUrl="http://mmbiz.qpic.cn/x", MediaId="expired_media_1"))
    await run_worker(settings, wx_plugins)
    (c,) = await list_complaints(client)
    (ev,) = c["evidence"]
    assert (ev["state"], ev["tries"]) == ("failed", 1) and ev["error"].startswith("not available"), ev
    assert len([call for call in weixin.calls if call.path.endswith("/media/get")]) == 1
    assert c["status"] == "accepted" and weixin.posts_to("/custom/send")


@pytest.mark.parametrize("case", ["unsigned", "forged", "replayed_old", "tampered_cipher", "other_appid"])
async def test_forged_tampered_unsigned_and_replayed_are_refused_with_nothing_stored(client, settings, case):
    before = await stored_keys(settings)
    xml = xml_message(Content="hello")
    if case == "unsigned":
        r = await client.post("/webhooks/wechat", content=xml.encode())
    elif case == "forged":
        query = signed_query(openid=OPENID)
        query["signature"] = sha1_signature("guessed-token", query["timestamp"], query["nonce"])
        r = await post_plain(client, xml, query)
    elif case == "replayed_old":  # a genuine request captured an hour ago
        r = await post_plain(client, xml, signed_query(timestamp=int(time.time()) - 3600, openid=OPENID))
    elif case == "tampered_cipher":
        r = await post_safe(client, xml, tamper=True)
    else:
        r = await post_safe(client, xml, app_id="wx_someone_else")
    assert r.status_code == 403, r.text
    assert await stored_keys(settings) == before


async def test_hostile_xml_is_refused_or_quarantined(client, settings):
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            '<xml><Content>&lol2;</Content></xml>')
    r = await post_plain(client, bomb)
    assert r.status_code == 200 and r.text == "success"  # signed, so kept for a person; never expanded
    (item,) = (await client.get("/v1/quarantine", headers=SUPERVISOR)).json()["items"]
    assert item["channel"] == "wechat"
    r = await client.post("/webhooks/wechat", params=signed_query(), content=b"<xml>" + b"x" * 100_000 + b"</xml>")
    assert r.status_code == 413


async def test_the_access_token_is_shared_refreshed_before_expiry_and_replaced_when_refused(settings, wx_plugins,
                                                                                             weixin):
    import redis.asyncio as aioredis

    from router.store import ComplaintStore
    from router.services import build_services

    redis = aioredis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(redis)
    services = build_services(settings, store)
    services.redis = redis
    wx = WeChatSettings(token=TOKEN, app_id=APP_ID, app_secret=APP_SECRET, api_base=weixin.base)
    try:
        # ten processes want a token at once: one fetch
        tokens = await asyncio.gather(*(AccessTokens(wx, services).get() for _ in range(10)))
        assert len(set(tokens)) == 1 and len(weixin.tokens_issued) == 1
        # close to expiry (under the margin): refreshed before it runs out
        key = f"{settings.redis_prefix}wechat:token:{APP_ID}"
        await redis.expire(key, 300)
        fresh = await AccessTokens(wx, services).get()
        assert fresh != tokens[0] and len(weixin.tokens_issued) == 2 and await redis.ttl(key) > 7000
        # WeChat refuses the cached token (someone else fetched one): fetched anew, the send goes through
        await redis.set(key, "STALE", ex=7000)
        from adapters.wechat import WeChatSender
        from normalizer.schema import Contact, OutboundMessage

        result = await WeChatSender(wx, services).send(OutboundMessage(
            id="rep_1", channel="wechat", complaint_id="cmp_1", case_number="C-20261123-000001",
            to=Contact(kind="wechat_openid", value=OPENID), text="您好", kind="agent"))
        assert result.status == "sent" and len(weixin.tokens_issued) == 3
    finally:
        await redis.aclose()
