"""The example plugin tested with the gateway's test kit: one line runs the conformance suite."""

import json
import time

from gateway.testkit import ChannelConformance, ChannelProbe, HttpRequest, Sent, gateway_client
from signed_webhook_channel import MAX_BODY, SignedWebhookChannel, Settings, sign

SECRET = "partner-shared-secret"


class SignedWebhookProbe(ChannelProbe):
    name, channel, accepted = "signed_webhook", "signed_webhook", (202,)
    secret, contact, credential, max_body = SECRET, "partner-user-1", SECRET, MAX_BODY

    def plugin(self, fake):
        fake.route("POST", r"/callback", lambda call, m: (204, b"", "text/plain"))
        return SignedWebhookChannel(Settings(secret=SECRET, callback_url=f"{fake.base}/callback"))

    def signed(self, events, timestamp=None):
        body = json.dumps({"events": events}).encode()
        ts = str(timestamp or int(time.time()))
        return HttpRequest("POST", "/webhooks/signed_webhook", body, {
            "Content-Type": "application/json", "X-Timestamp": ts, "X-Signature": sign(self.secret, ts, body)})

    def batch(self, items):
        return self.signed([{"type": "message", "id": key, "from": self.contact, "text": text, "language": "en"}
                            for text, key in items])

    def inbound(self, text, key):
        return self.batch([(text, key)])

    def non_message(self, key):
        return self.signed([{"type": "read", "id": key, "from": self.contact}])

    def sent_messages(self, fake):
        def credential(call):  # the secret, if the callback is signed with it
            ts = call.headers.get("X-Timestamp", "")
            return SECRET if call.headers.get("X-Signature") == sign(SECRET, ts, call.body) else ""
        return [Sent(c.json()["to"], c.json()["text"], credential(c), c.status) for c in fake.posts_to("/callback")]


class TestSignedWebhookConformance(ChannelConformance):
    probe = SignedWebhookProbe()


async def test_a_replayed_old_request_is_refused(gw_settings, fake_outbound):
    from plugins.manager import GatewayPlugins

    probe = SignedWebhookProbe()
    plugins = GatewayPlugins()
    plugins.register("signed_webhook", probe.plugin(fake_outbound))
    old = probe.signed([{"type": "message", "id": "old", "from": "p", "text": "captured an hour ago"}],
                       timestamp=int(time.time()) - 3600)
    async with gateway_client(gw_settings, plugins) as client:
        r = await client.post(old.path, content=old.body, headers=old.headers)
        assert r.status_code == 403 and r.json()["code"] == "timestamp_stale"
