"""The payment app's ``POST /v1/messages`` answered without the framework (``plugins.direct``,
``gateway.direct_routes``): every request gets the answer the framework's route gives (status,
headers, body) and the same message is stored; plain requests are the only ones taken there;
the ordinary route's roles are checked first; a client that leaves mid-body leaves nothing
behind; and a plugin cannot offer a direct route beside someone else's route."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any, AsyncIterator

import msgspec
import pytest
from litestar import post
from litestar.testing import AsyncTestClient

from gateway.direct_routes import own_direct, plain
from normalizer.schema import InboundMessage
from plugins.contract import RouteMount
from tests.conftest import ALICE, APP, auth, stored_keys

pytestmark = pytest.mark.integration

MID = re.compile(rb"msg_[0-9a-z]+")
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()


@pytest.fixture
async def both(settings) -> AsyncIterator[tuple[Any, Any, list[str]]]:
    """Two apps on the same Redis: one answering ``POST /v1/messages`` directly, one through the
    framework alone; and the paths of the requests the first one's framework answered."""
    from gateway.app import create_app

    direct_app, framework_app = create_app(settings), create_app(settings)
    framework_app.use_direct({}, settings.max_body_bytes)
    by_framework: list[str] = []
    framework_part = direct_app.asgi_handler

    async def counted(scope, receive, send):  # what Litestar's own __call__ hands a request to
        by_framework.append(scope["path"])
        await framework_part(scope, receive, send)

    direct_app.asgi_handler = counted
    async with AsyncTestClient(app=direct_app, raise_server_exceptions=False) as direct, \
            AsyncTestClient(app=framework_app, raise_server_exceptions=False) as framework:
        yield direct, framework, by_framework


def _answer(response) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (but the date) and body, message ids made alike."""
    headers = {k: MID.sub(b"msg_*", v.encode()).decode() for k, v in response.headers.items() if k != "date"}
    return response.status_code, headers, MID.sub(b"msg_*", response.content)


async def _stored(store, mid: str) -> dict[str, Any]:
    """The message as stored, but its id and time of arrival."""
    raw = await store.r.hget(store.keys.msg(mid), "data")
    message = msgspec.to_builtins(msgspec.msgpack.decode(raw, type=InboundMessage))
    for field in ("id", "received_at"):
        message.pop(field)
    for link in message.get("attachments", ()):
        link.pop("ref", None)  # (each copy of the bytes stored under a name of its own)
    return message


CASES: list[tuple[str, int, dict[str, Any]]] = [
    ("accepted", 202, {"json": {"user_id": "u-1", "text": "我被重复扣款了 ¥128.50"}, "headers": APP}),
    ("accepted with an unknown hint", 202, {"json": {"user_id": "u-2", "text": "card blocked", "category_hint": "x"},
                                            "headers": APP}),
    ("accepted with everything", 202, {"json": {
        "user_id": "u-7", "text": "refund T2026112212345678 please", "client_message_id": "c-all", "amount": "12.50",
        "currency": "USD", "language": "en", "phone": "+86 138 0013 8000", "email": "A@Example.com",
        "customer_tier": "vip", "category_hint": "payment_amount",
        "attachments": [{"filename": "s.png", "content_type": "image/png", "data_base64": PNG}]}, "headers": APP}),
    ("no credential", 401, {"json": {"user_id": "u-3", "text": "hi"}}),
    ("malformed credential", 401, {"json": {"user_id": "u-3", "text": "hi"}, "headers": {"Authorization": "Basic x"}}),
    ("invalid credential", 401, {"json": {"user_id": "u-3", "text": "hi"}, "headers": auth("wrong")}),
    ("another role", 403, {"json": {"user_id": "u-3", "text": "hi"}, "headers": ALICE}),
    ("not JSON", 415, {"content": b"user_id=u",
                       "headers": {**APP, "Content-Type": "application/x-www-form-urlencoded"}}),
    ("empty body", 400, {"content": b"", "headers": {**APP, "Content-Type": "application/json"}}),
    ("malformed JSON", 400, {"content": b"{\"user_id\": ", "headers": {**APP, "Content-Type": "application/json"}}),
    ("a bad field", 422, {"json": {"user_id": "u 4", "text": "hi"}, "headers": APP}),
    ("an unknown field", 422, {"json": {"user_id": "u-4", "text": "hi", "mood": "bad"}, "headers": APP}),
    ("no text", 422, {"json": {"user_id": "u-4", "text": "   "}, "headers": APP}),
    ("a bad amount", 422, {"json": {"user_id": "u-4", "text": "hi", "amount": "12.3.4"}, "headers": APP}),
]


@pytest.mark.parametrize("name,status,request_args", CASES, ids=[name for name, _, _ in CASES])
async def test_a_request_gets_the_frameworks_answer(both, store, name, status, request_args):
    direct, framework, by_framework = both
    got = await direct.post("/v1/messages", **request_args)
    expected = await framework.post("/v1/messages", **request_args)
    assert by_framework == [], "answered without the framework"
    assert got.status_code == status, got.text
    assert _answer(got) == _answer(expected)
    if status == 202 and "client_message_id" not in request_args["json"]:  # (with one: the same message)
        assert await _stored(store, got.json()["message_id"]) == await _stored(store, expected.json()["message_id"])


async def test_retries_answer_alike_and_store_one_message(both, store):
    direct, framework, by_framework = both
    body = {"user_id": "u-9", "text": "charged twice for one order", "client_message_id": "c-9"}
    first = await direct.post("/v1/messages", json=body, headers=APP)
    assert first.status_code == 202
    mid = first.json()["message_id"]
    # the same retry, by either route: the same message; a different body under the key: 409
    for client in (direct, framework):
        again = await client.post("/v1/messages", json=body, headers=APP)
        assert (again.status_code, again.json()["message_id"], again.headers["location"]) == \
               (202, mid, f"/v1/messages/{mid}")
    conflicts = [await client.post("/v1/messages", json={**body, "text": "other"}, headers=APP)
                 for client in (direct, framework)]
    assert conflicts[0].status_code == 409
    assert _answer(conflicts[0]) == _answer(conflicts[1])
    assert by_framework == []
    assert (await store.message_state(mid))["status"] == "received"


async def test_what_is_not_plain_goes_to_the_framework(both, settings):
    direct, framework, by_framework = both
    chunks = [{"type": "http.request", "body": b'{"user_id": "u-5", ', "more_body": True},
              {"type": "http.request", "body": b'"text": "refund please"}', "more_body": False}]
    sent = await _call(direct, _scope(None), chunks)
    assert sent[0]["status"] == 202 and by_framework == ["/v1/messages"]  # no length declared
    over = b" " * (settings.max_body_bytes + 1)
    r = await direct.post("/v1/messages", content=over, headers={**APP, "Content-Type": "application/json"})
    assert r.status_code == 413 and by_framework == ["/v1/messages"] * 2
    r = await direct.post("/v1/messages/", json={"user_id": "u-5", "text": "hi"}, headers=APP)
    assert _answer(r) == _answer(await framework.post("/v1/messages/", json={"user_id": "u-5", "text": "hi"},
                                                      headers=APP))
    assert by_framework == ["/v1/messages"] * 2 + ["/v1/messages/"]
    assert plain({"headers": [(b"content-length", b"10")]}, 10)
    assert plain({"headers": [(b"Content-Length", b"0")]}, 10)
    for headers in ([], [(b"content-length", b"11")], [(b"content-length", b"-1")], [(b"content-length", b"1 ")],
                    [(b"content-length", b"1"), (b"content-length", b"1")], [(b"content-length", b"9" * 5000)],
                    [(b"content-length", b"1"), (b"transfer-encoding", b"chunked")]):
        assert not plain({"headers": headers}, 10), headers[:1]
    assert not plain({"headers": [(b"content-length", b"1")], "root_path": "/api"}, 10)


async def test_a_body_over_the_limit_as_it_arrives_is_refused(settings):
    """A declared length within the limit but more bytes sent (a lying client; a real server stops
    it first): 413, and nothing stored."""
    from gateway.app import create_app

    app = create_app(settings)
    chunks = [{"type": "http.request", "body": b"{" + b" " * settings.max_body_bytes, "more_body": True},
              {"type": "http.request", "body": b"}", "more_body": False}]
    before = await stored_keys(settings)
    async with AsyncTestClient(app=app) as client:
        sent = await _call(client, _scope(b"10"), chunks)
    assert sent[0]["status"] == 413
    assert b"payload_too_large" in sent[1]["body"]
    assert [k for k in await stored_keys(settings) if ":msg:" in k or "arq:job" in k] == \
           [k for k in before if ":msg:" in k or "arq:job" in k]


async def test_a_client_gone_mid_body_leaves_nothing(settings, store):
    from gateway.app import create_app

    app = create_app(settings)
    async with AsyncTestClient(app=app) as client:
        before = set(await stored_keys(settings))
        for cut in (1, 2):  # gone after the first part of the body, or before any
            chunks = [{"type": "http.request", "body": b'{"user_id": "u-6", ', "more_body": True}][:cut - 1]
            sent = await _call(client, _scope(b"40"), [*chunks, {"type": "http.disconnect"}])
            assert sent == []
        assert not set(await stored_keys(settings)) - before
        r = await client.post("/v1/messages", json={"user_id": "u-6", "text": "hi"}, headers=APP)
        assert r.status_code == 202  # (what the pattern finds for a message taken in)
        taken = f"{settings.redis_prefix}msg:{r.json()['message_id']}".encode()
        assert await store.r.keys(f"{settings.redis_prefix}msg:*") == [taken]


async def test_the_ordinary_routes_roles_come_first(both):
    """A wrong credential is refused before the direct handler runs: its body is never read."""
    direct, _, by_framework = both
    r = await direct.post("/v1/messages", content=b"not even json", headers={**ALICE, "Content-Type": "text/plain"})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert by_framework == []


def test_a_direct_route_needs_an_ordinary_one_of_its_own(settings):
    from gateway.app import create_app

    app = create_app(settings)

    async def handler(request):  # pragma: no cover - never called
        raise AssertionError

    for key in ("POST /v1/elsewhere", "PUT /v1/messages"):
        with pytest.raises(ValueError, match="no ordinary route"):
            app.use_direct({key: handler}, settings.max_body_bytes)
    with pytest.raises(ValueError, match="no parameters"):
        app.use_direct({"GET /v1/messages/{message_id:str}": handler}, settings.max_body_bytes)

    @post("/hook")
    async def hook() -> None:  # pragma: no cover - never called
        return None

    assert own_direct("p", RouteMount([hook], direct={"POST /webhooks/p/hook": handler}), "/webhooks/p")
    with pytest.raises(ValueError, match="not beside a route of its own"):  # another plugin's path
        own_direct("p", RouteMount([hook], direct={"POST /v1/messages": handler}), "/webhooks/p")


def test_two_plugins_cannot_offer_one_direct_route(settings):
    """Each must be beside a route of its own, and two plugins never mount one path."""
    from adapters.app import AppChannel
    from gateway.app import create_app
    from tests.conftest import app_plugins

    plugins = app_plugins()
    plugins.register("app2", AppChannel())
    with pytest.raises(ValueError, match="both mount POST /v1/messages"):
        create_app(settings, plugins=plugins)


async def _call(client: Any, scope: dict[str, Any], chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ASGI messages ``client``'s app sends for one request whose body arrives as ``chunks``
    (run on the loop the app runs on, beside its Redis connection)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.to_thread(client.blocking_portal.call, client.app, scope, receive, send)
    return sent


def _scope(length: bytes | None) -> dict[str, Any]:
    """A POST /v1/messages from the app; ``length``: its Content-Length (``None``: chunked)."""
    framing = (b"content-length", length) if length is not None else (b"transfer-encoding", b"chunked")
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/messages", "raw_path": b"/v1/messages", "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
            "headers": [(b"content-type", b"application/json"), framing,
                        (b"authorization", APP["Authorization"].encode())]}
