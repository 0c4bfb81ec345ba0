"""The channel conformance suite: what every channel must do, checked against the real app and
a real worker on a Redis key prefix of the test's own, with the provider played by a
``FakeApi``. A channel describes how to talk to it in a ``ChannelProbe``; the suite is one line::

    class TestMyChannel(ChannelConformance):
        probe = MyChannelProbe()

The tests are plain (not ``async``) functions that run their own event loop, so an integrator's
package needs no pytest-asyncio configuration to run them. Each test names what it checks:

- the routes mount;
- an unsigned request, a body changed after signing and a request signed with the wrong secret
  are each refused (``probe.refused``) and store nothing;
- a body over the channel's limit is refused with 413 and stores nothing;
- a message becomes a complaint; the provider's retries of it make no second message and no
  second acknowledgement; the acknowledgement goes to the sender, with the channel's credential;
- several messages in one provider request are each taken once, also when the desk refuses
  halfway through (503) and the provider sends the whole request again;
- an event that is not a customer message (a read receipt, a delivery status) makes nothing;
- the sender delivers an agent's reply; a provider's 5xx is retried, a 4xx is not;
- a plugin that fails in every hook beside the channel changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar
from urllib.parse import urlencode

import pytest
from msgspec.structs import replace

from gateway.testkit_support import TESTKIT_SUPERVISOR, FakeApi, bearer, gateway_client, run_worker, stored_keys
from plugins.hookspecs import hookimpl

T = TypeVar("T")
SUPERVISOR = bearer(TESTKIT_SUPERVISOR[1])
#: Headers and query parameters that carry a signature, a secret or a token.
CREDENTIAL_NAME = re.compile(r"sign|secret|token|hmac|authorization", re.I)


@dataclass
class HttpRequest:
    """One request as the provider would send it."""

    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.path + (f"?{urlencode(self.query)}" if self.query else "")


@dataclass
class Sent:
    """One request the channel's sender made to the provider, as the probe reads it back."""

    #: Who it was addressed to (the contact's value: a phone number, a chat id, a user id).
    to: str
    text: str
    #: What it authenticated with (a token, or the secret whose signature it carries); ``""``: none.
    credential: str
    #: The status the fake provider answered.
    status: int = 0


class ChannelProbe:
    """How the conformance suite talks to one channel. Set the attributes, implement ``plugin``,
    ``inbound`` and ``sent_messages``; override the rest where your provider has them."""

    #: The plugin's name (its routes mount under /webhooks/<name> unless it names a prefix).
    name: str = ""
    #: The channel name its complaints carry.
    channel: str = ""
    #: The public URL providers sign against (where the signature covers the URL).
    public_url: str | None = None
    #: 2xx statuses a good request may get.
    accepted: tuple[int, ...] = (200, 202, 204)
    #: The status of a request without a valid signature (403 across the gateway's channels).
    refused: int = 403
    #: The secret ``inbound`` signs with; the suite signs with another one to check it is refused.
    secret: str = ""
    #: False when the provider's authentication does not cover the body (a static secret
    #: header, a signature over a timestamp and nonce only): the tampered-body check is skipped.
    signs_body: bool = True
    #: The contact value ``inbound``'s requests come from: replies must be addressed to it.
    contact: str = ""
    #: The credential every send must carry, as ``sent_messages`` reports it.
    credential: str = ""
    #: The largest body the channel takes; one byte more must be refused with 413.
    max_body: int = 0
    #: False for a channel whose delivery is storing the reply (nothing goes to a provider).
    outbound: bool = True

    def plugin(self, fake: FakeApi) -> Any:
        """Your plugin object, configured to send to ``fake`` (a started FakeApi) instead of the
        provider. Add the routes your sender calls to ``fake`` here."""
        raise NotImplementedError

    def inbound(self, text: str, key: str) -> HttpRequest:
        """A valid request signed with ``self.secret``, carrying one customer message from
        ``self.contact``; ``key`` makes it unique (the suite sends the same key again to play a
        provider's retry)."""
        raise NotImplementedError

    def batch(self, items: list[tuple[str, str]]) -> HttpRequest | None:
        """One signed request carrying several messages ((text, key) each), as the provider
        batches them; ``None`` when the provider sends one message per request."""
        return None

    def non_message(self, key: str) -> HttpRequest | None:
        """A signed request with no customer message in it (a read receipt, a delivery status, a
        typing notice); ``None`` when the provider sends none."""
        return None

    def sent_messages(self, fake: FakeApi) -> list[Sent]:
        """Every send request ``fake`` received (answered or failed), in order."""
        raise NotImplementedError

    def failure(self, status: int) -> tuple[int, Any]:
        """The provider's answer for a failure with this HTTP status (status, JSON body)."""
        return status, {"error": {"code": status, "message": "fake provider failure"}}

    def unsigned(self, request: HttpRequest) -> HttpRequest:
        """The same request without its signature: every header and query parameter that looks
        like a signature, secret or token removed."""
        return HttpRequest(request.method, request.path, request.body,
                           {k: v for k, v in request.headers.items() if not CREDENTIAL_NAME.search(k)},
                           {k: v for k, v in request.query.items() if not CREDENTIAL_NAME.search(k)})

    def with_secret(self, secret: str) -> "ChannelProbe":
        """A copy of this probe that signs with ``secret``."""
        other = copy.copy(self)
        other.secret = secret
        return other

    async def delivered_texts(self, fake: FakeApi, client: Any, complaint_id: str) -> list[str]:
        """What reached the customer; by default what the provider answered 2xx to. A channel
        whose "delivery" is storing the reply (the app) reads the complaint instead."""
        return [s.text for s in self.sent_messages(fake) if 200 <= s.status < 300]


class _Exploding:
    """A plugin that fails in every hook it can."""

    needs_personal_data = True

    @hookimpl
    def classify_message(self, message: Any) -> Any:
        raise RuntimeError("boom")

    @hookimpl
    def enrich_complaint(self, complaint: Any, message: Any) -> Any:
        raise RuntimeError("boom")

    @hookimpl
    def complaint_event(self, event: Any, complaint: Any) -> None:
        raise RuntimeError("boom")


def run(coroutine: Callable[[], Awaitable[T]]) -> T:
    """Each test runs on a loop of its own (no pytest-asyncio configuration needed)."""
    return asyncio.run(coroutine())  # type: ignore[arg-type]


class _Rig:
    """One test's gateway: the probe's plugin (and any extra), the app and a burst worker."""

    def __init__(self, probe: ChannelProbe, settings: Any, fake: FakeApi, *extra: Any) -> None:
        from plugins.manager import GatewayPlugins

        self.probe, self.settings, self.fake = probe, settings, fake
        self.plugins = GatewayPlugins()
        self.plugins.register(probe.name, probe.plugin(fake))
        for n, plugin in enumerate(extra):
            self.plugins.register(f"other{n}", plugin)
        self.plugins.check()
        self.client: Any = None

    async def send(self, request: HttpRequest) -> Any:
        return await self.client.request(request.method, request.url, content=request.body, headers=request.headers)

    async def work(self) -> int:
        return await run_worker(self.settings, self.plugins)

    async def complaints(self) -> list[dict[str, Any]]:
        r = await self.client.get("/v1/complaints", params={"limit": 200}, headers=SUPERVISOR)
        assert r.status_code == 200, r.text
        return [c for c in r.json()["items"] if c["channel"] == self.probe.channel]

    async def message_texts(self) -> list[str]:
        """The text of every message stored on this channel's complaints."""
        texts = []
        for c in await self.complaints():
            full = (await self.client.get(f"/v1/complaints/{c['id']}", headers=SUPERVISOR)).json()
            texts += [m["text"] for m in full["messages"]]
        return texts

    async def refused_and_nothing_stored(self, request: HttpRequest, what: str, status: int) -> None:
        before = await stored_keys(self.settings)
        r = await self.send(request)
        assert r.status_code == status, f"{what} got {r.status_code}, not {status}: {r.text[:200]}"
        assert await stored_keys(self.settings) == before, f"{what} stored something"


class ChannelConformance:
    """Subclass with ``probe = YourProbe()``; pytest collects the tests below for your channel."""

    probe: ChannelProbe

    @contextlib.asynccontextmanager
    async def _rig(self, settings: Any, fake: FakeApi, *extra: Any) -> AsyncIterator[_Rig]:
        rig = _Rig(self.probe, settings, fake, *extra)
        async with gateway_client(settings, rig.plugins, self.probe.public_url) as client:
            rig.client = client
            yield rig

    def _sent(self, fake: FakeApi) -> list[Sent]:
        sent = self.probe.sent_messages(fake)
        for s in sent:
            assert s.to == self.probe.contact, f"the sender addressed {s.to!r}, not the customer {self.probe.contact!r}"
            assert s.credential == self.probe.credential, \
                f"the sender authenticated with {s.credential!r}, not the channel's credential"
        return sent

    def test_routes_mount(self, gw_settings: Any, fake_outbound: FakeApi) -> None:
        async def check() -> None:
            async with self._rig(gw_settings, fake_outbound) as rig:
                path = self.probe.inbound("route check", "mount").path
                paths = {r.path for r in rig.client.app.routes}
                assert any(path == p or path.startswith(p.split("{")[0]) for p in paths), \
                    f"{path} is not among the mounted routes"
                assert rig.plugins.errors[self.probe.name] == 0
        run(check)

    def test_an_unsigned_request_is_refused_and_stores_nothing(self, gw_settings: Any, fake_outbound: FakeApi) -> None:
        async def check() -> None:
            async with self._rig(gw_settings, fake_outbound) as rig:
                request = self.probe.unsigned(self.probe.inbound("unsigned message", "unsigned"))
                await rig.refused_and_nothing_stored(request, "an unsigned request", self.probe.refused)
        run(check)

    def test_a_body_changed_after_signing_is_refused_and_stores_nothing(self, gw_settings: Any,
                                                                         fake_outbound: FakeApi) -> None:
        if not self.probe.signs_body:
            pytest.skip("the provider's authentication does not cover the body")

        async def check() -> None:
            async with self._rig(gw_settings, fake_outbound) as rig:
                genuine = self.probe.inbound("my refund never arrived", "genuine")
                r = await rig.send(genuine)  # captured on its way, then altered
                assert r.status_code in self.probe.accepted, r.text
                other = self.probe.inbound("send the refund to another card", "tampered")
                tampered = HttpRequest(genuine.method, genuine.path, other.body, genuine.headers, genuine.query)
                await rig.refused_and_nothing_stored(tampered, "a body changed after signing", self.probe.refused)
        run(check)

    def test_a_wrong_secret_is_refused_and_stores_nothing(self, gw_settings: Any, fake_outbound: FakeApi) -> None:
        assert self.probe.secret, "the probe must say which secret inbound() signs with (probe.secret)"

        async def check() -> None:
            async with self._rig(gw_settings, fake_outbound) as rig:
                request = self.probe.with_secret("not-" + self.probe.secret).inbound("wrong secret", "wrong-secret")
                await rig.refused_and_nothing_stored(request, "a request signed with the wrong secret",
                                                     self.probe.refused)
        run(check)

    def test_a_body_over_the_limit_is_refused_and_stores_nothing(self, gw_settings: Any,
                                                                  fake_outbound: FakeApi) -> None:
        assert self.probe.max_body > 0, "the probe must give the channel's body limit (probe.max_body)"

        async def check() -> None:
            async with self._rig(gw_settings, fake_outbound) as rig:
                request = self.probe.inbound("x" * (self.probe.max_body + 1), "oversized")
                await rig.refused_and_nothing_stored(request, f"a body over {self.probe.max_body} bytes", 413)
        run(check)

    def test_a_retry_makes_no_second_message_and_no_second_acknowledgement(self, gw_settings: Any,
                                                                           fake_outbound: FakeApi) -> None:
        async def check() -> None:
            async with self._rig(gw_settings, fake_outbound) as rig:
                request = self.probe.inbound("I was charged twice, please refund", "retry")
                for _ in range(3):
                    r = await rig.send(request)
                    assert r.status_code in self.probe.accepted, r.text
                await rig.work()
                texts = await rig.message_texts()
                assert len(texts) == 1, f"three deliveries of one message stored {len(texts)} messages"
                assert "charged twice" in texts[0]
                (complaint,) = await rig.complaints()
                if self.probe.outbound:
                    sent = self._sent(fake_outbound)
                    assert len(sent) == 1, f"three deliveries of one message sent {len(sent)} acknowledgements"
                    assert complaint["case_number"] in sent[0].text, sent[0].text
        run(check)

    def test_a_batch_is_taken_once_each_even_when_refused_halfway(self, gw_settings: Any,
                                                                  fake_outbound: FakeApi) -> None:
        items = [("refund never arrived for order 1", "batch-1"), ("the app crashes at login", "batch-2"),
                 ("card charged twice yesterday", "batch-3")]
        request = self.probe.batch(items)
        if request is None:
            pytest.skip("the provider sends one message per request")
        # one message may wait for a worker: the second of the batch is refused (503)
        settings = replace(gw_settings, max_pending=1)

        async def check() -> None:
            async with self._rig(settings, fake_outbound) as rig:
                statuses = []
                for _ in range(len(items) + 1):  # the provider retries until it is answered 2xx
                    r = await rig.send(request)
                    statuses.append(r.status_code)
                    if r.status_code in self.probe.accepted:
                        break
                    assert r.status_code in (429, 503), f"a batch refused halfway got {r.status_code}: {r.text[:200]}"
                    await rig.work()
                assert statuses[0] in (429, 503), \
                    f"a batch the desk refused halfway was answered {statuses[0]}: the provider will not send it again"
                r = await rig.send(request)  # and once more after it was taken
                assert r.status_code in self.probe.accepted, r.text
                await rig.work()
                texts = await rig.message_texts()
                for text, _ in items:
                    found = sum(text in t for t in texts)
                    assert found == 1, f"{text!r} of a batch was taken {found} times (statuses {statuses})"
        run(check)

    def test_events_that_are_not_messages_make_nothing(self, gw_settings: Any, fake_outbound: FakeApi) -> None:
        request = self.probe.non_message("event")
        if request is None:
            pytest.skip("the provider sends no events besides messages")

        async def check() -> None:
            async with self._rig(gw_settings, fake_outbound) as rig:
                r = await rig.send(request)
                assert r.status_code in self.probe.accepted, f"an event that is not a message got {r.status_code}"
                await rig.work()
                assert await rig.complaints() == [], "an event that is not a message made a complaint"
                q = await rig.client.get("/v1/quarantine", headers=SUPERVISOR)
                assert q.json()["items"] == [], "an event that is not a message was quarantined"
        run(check)

    def test_the_sender_delivers_a_reply_and_retries_only_what_is_worth_retrying(
            self, gw_settings: Any, fake_outbound: FakeApi) -> None:
        async def reply(rig: _Rig, complaint_id: str, text: str) -> dict[str, Any]:
            r = await rig.client.post(f"/v1/complaints/{complaint_id}/replies", json={"text": text},
                                      headers=SUPERVISOR)
            assert r.status_code == 201, r.text
            await rig.work()
            c = (await rig.client.get(f"/v1/complaints/{complaint_id}", headers=SUPERVISOR)).json()
            return next(x for x in c["replies"] if x["text"] == text)

        async def check() -> None:
            async with self._rig(gw_settings, fake_outbound) as rig:
                r = await rig.send(self.probe.inbound("app crashes when I pay", "reply"))
                assert r.status_code in self.probe.accepted, r.text
                await rig.work()
                (complaint,) = await rig.complaints()
                if self.probe.outbound:
                    fake_outbound.fail_next.append(self.probe.failure(503))
                stored = await reply(rig, complaint["id"], "Fixed in 5.2.1, sorry!")
                if self.probe.outbound:
                    tries = [s for s in self._sent(fake_outbound) if "Fixed in 5.2.1" in s.text]
                    assert [s.status >= 500 for s in tries] == [True, False], \
                        f"a reply the provider answered 503 was tried {len(tries)} times, not once more"
                assert stored["delivery"] in ("sent", "delivered", "read"), stored
                delivered = await self.probe.delivered_texts(fake_outbound, rig.client, complaint["id"])
                assert any(complaint["case_number"] in t for t in delivered), delivered
                assert any("Fixed in 5.2.1" in t for t in delivered), delivered
                if not self.probe.outbound:
                    return
                fake_outbound.fail_next.append(self.probe.failure(400))
                stored = await reply(rig, complaint["id"], "One more question for you")
                tries = [s for s in self._sent(fake_outbound) if "One more question" in s.text]
                assert len(tries) == 1, f"a reply the provider refused (400) was tried {len(tries)} times"
                assert stored["delivery"] == "failed", stored
        run(check)

    def test_a_failing_plugin_beside_it_changes_nothing(self, gw_settings: Any, fake_outbound: FakeApi) -> None:
        async def check() -> None:
            async with self._rig(gw_settings, fake_outbound, _Exploding()) as rig:
                r = await rig.send(self.probe.inbound("my balance is wrong", "isolated"))
                assert r.status_code in self.probe.accepted, r.text
                await rig.work()
                assert len(await rig.complaints()) == 1
                assert rig.plugins.errors["other0"] >= 2  # counted, not fatal
        run(check)


__all__ = ["ChannelConformance", "ChannelProbe", "HttpRequest", "Sent"]
