"""The LINE channel tested with the gateway's test kit: the conformance suite, plus what is
LINE's own (the retry key, a redelivery LINE already took)."""

import json
import time
import uuid

from gateway.testkit import (
    TESTKIT_SUPERVISOR,
    ChannelConformance,
    ChannelProbe,
    HttpRequest,
    Sent,
    bearer,
    gateway_client,
    run_worker,
)
from line_channel import MAX_BODY, LineChannel, Settings, signature

SECRET, TOKEN, USER = "line-channel-secret", "line-channel-access-token", "U4af4980629a1b2c3d4e5f60718293a4b"
PUSH = "/v2/bot/message/push"


def push_ok(call, match):
    return 200, {"sentMessages": [{"id": str(uuid.uuid4().int)[:18], "quoteToken": "q"}]}, "application/json"


class LineProbe(ChannelProbe):
    name, channel, accepted = "line", "line", (200,)
    secret, contact, credential, max_body = SECRET, USER, TOKEN, MAX_BODY

    def plugin(self, fake):
        fake.route("POST", PUSH, push_ok)
        return LineChannel(Settings(channel_secret=SECRET, channel_access_token=TOKEN, api_base=fake.base))

    def signed(self, events):
        body = json.dumps({"destination": "Uchannel0001", "events": events}).encode()
        return HttpRequest("POST", "/webhooks/line", body,
                           {"Content-Type": "application/json", "X-Line-Signature": signature(self.secret, body)})

    def text_event(self, text, key):
        return {"type": "message", "mode": "active", "timestamp": int(time.time() * 1000),
                "webhookEventId": f"01H{key.upper()}", "deliveryContext": {"isRedelivery": False},
                "source": {"type": "user", "userId": self.contact}, "replyToken": uuid.uuid4().hex,
                "message": {"type": "text", "id": str(abs(hash(key)))[:15], "quoteToken": "q", "text": text}}

    def inbound(self, text, key):
        return self.signed([self.text_event(text, key)])

    def batch(self, items):
        return self.signed([self.text_event(text, key) for text, key in items])

    def non_message(self, key):
        source = {"type": "user", "userId": self.contact}
        return self.signed([
            {"type": "follow", "mode": "active", "timestamp": 1, "webhookEventId": f"01HF{key}", "source": source,
             "replyToken": "r", "follow": {"isUnblocked": False}},
            {"type": "message", "mode": "active", "timestamp": 1, "webhookEventId": f"01HS{key}", "source": source,
             "replyToken": "r", "message": {"type": "sticker", "id": "1", "packageId": "446", "stickerId": "1988"}}])

    def sent_messages(self, fake):
        return [Sent(c.json()["to"], c.json()["messages"][0]["text"],
                     c.headers.get("Authorization", "").removeprefix("Bearer "), c.status) for c in fake.posts_to(PUSH)]


class TestLineConformance(ChannelConformance):
    probe = LineProbe()


async def test_every_try_of_a_reply_carries_the_same_retry_key_and_a_409_counts_as_sent(gw_settings, fake_outbound):
    from plugins.manager import GatewayPlugins

    probe = LineProbe()
    plugins = GatewayPlugins()
    plugins.register("line", probe.plugin(fake_outbound))
    # LINE took the first try but our side saw a 503; the second try is answered 409 (already accepted)
    fake_outbound.fail_next += [(503, {"message": "busy"}), (409, {"message": "The retry key is already accepted"})]
    request = probe.inbound("退款还没到账", "retrykey")
    async with gateway_client(gw_settings, plugins) as client:
        r = await client.post(request.path, content=request.body, headers=request.headers)
        assert r.status_code == 200, r.text
        await run_worker(gw_settings, plugins)
        (item,) = (await client.get("/v1/complaints", headers=bearer(TESTKIT_SUPERVISOR[1]))).json()["items"]
        complaint = (await client.get(f"/v1/complaints/{item['id']}", headers=bearer(TESTKIT_SUPERVISOR[1]))).json()
    tries = fake_outbound.posts_to(PUSH)
    keys = {c.headers["X-Line-Retry-Key"] for c in tries}
    assert [c.status for c in tries] == [503, 409] and len(keys) == 1 and uuid.UUID(keys.pop()).version == 5
    assert [r["delivery"] for r in complaint["replies"]] == ["sent"]
