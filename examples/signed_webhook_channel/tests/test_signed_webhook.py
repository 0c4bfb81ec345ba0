"""The example plugin tested with the gateway's test kit: one line runs the conformance suite."""

import json
import time

from gateway.testkit import ChannelConformance, ChannelProbe, HttpRequest, gateway_client
from signed_webhook_channel import SignedWebhookChannel, Settings, sign

SECRET = "partner-shared-secret"


class SignedWebhookProbe(ChannelProbe):
    name, channel = "signed_webhook", "signed_webhook"
    accepted = (202,)

    def plugin(self, fake):
        fake.route("POST", r"/callback", lambda call, m: (204, b"", "text/plain"))
        return SignedWebhookChannel(Settings(secret=SECRET, callback_url=f"{fake.base}/callback"))

    def inbound(self, text, key, timestamp=None):
        body = json.dumps({"id": key, "from": "partner-user-1", "text": text, "language": "en"}).encode()
        ts = str(timestamp or int(time.time()))
        return HttpRequest("POST", "/webhooks/signed_webhook", body,
                           {"Content-Type": "application/json", "X-Timestamp": ts, "X-Signature": sign(SECRET, ts, body)})

    def sent_texts(self, fake):
        return [c.json()["text"] for c in fake.posts_to("/callback")]


class TestSignedWebhookConformance(ChannelConformance):
    probe = SignedWebhookProbe()


async def test_a_replayed_old_request_is_refused(gw_settings, fake_outbound):
    from plugins.manager import GatewayPlugins

    probe = SignedWebhookProbe()
    plugins = GatewayPlugins()
    plugins.register("signed_webhook", probe.plugin(fake_outbound))
    old = probe.inbound("captured an hour ago", "old", timestamp=int(time.time()) - 3600)
    async with gateway_client(gw_settings, plugins) as client:
        r = await client.post(old.path, content=old.body, headers=old.headers)
        assert r.status_code == 401 and r.json()["code"] == "timestamp_stale"
