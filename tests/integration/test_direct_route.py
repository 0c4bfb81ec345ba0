"""The payment app's ``POST /v1/messages`` answered without the framework (``plugins.direct``,
``gateway.direct_routes``): every request gets the answer the framework's route gives (status,
headers, body, what is stored), plain requests are the only ones taken there, and a client
that leaves mid-body leaves nothing behind."""

from __future__ import annotations

import asyncio
import re
from typing import Any, AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from gateway.direct_routes import plain
from tests.conftest import ALICE, APP, auth

pytestmark = pytest.mark.integration

MID = re.compile(rb"msg_[0-9a-z]+")


@pytest.fixture
async def both(settings) -> AsyncIterator[tuple[Any, Any, list[str]]]:
    """Two apps on the same Redis: one answering ``POST /v1/messages`` directly, one through the
    framework alone; and the log of the direct handler's calls."""
    from gateway.app import create_app

    direct_app, framework_app = create_app(settings), create_app(settings)
    framework_app.use_direct({}, settings.max_body_bytes)
    calls: list[str] = []
    handler = direct_app.direct[("POST", "/v1/messages")]

    async def counted(request):  # the real handler, its calls counted
        calls.append(request.scope["path"])
        return await handler(request)

    direct_app.direct[("POST", "/v1/messages")] = counted
    async with AsyncTestClient(app=direct_app, raise_server_exceptions=False) as direct, \
            AsyncTestClient(app=framework_app, raise_server_exceptions=False) as framework:
        yield direct, framework, calls


def _answer(response) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (but the date) and body, message ids made alike."""
    headers = {k: MID.sub(b"msg_*", v.encode()).decode() for k, v in response.headers.items() if k != "date"}
    return response.status_code, headers, MID.sub(b"msg_*", response.content)


CASES: list[tuple[str, dict[str, Any]]] = [
    ("accepted", {"json": {"user_id": "u-1", "text": "我被重复扣款了 ¥128.50"}, "headers": APP}),
    ("accepted with an unknown hint", {"json": {"user_id": "u-2", "text": "card blocked", "category_hint": "nope"},
                                       "headers": APP}),
    ("no credential", {"json": {"user_id": "u-3", "text": "hi"}}),
    ("malformed credential", {"json": {"user_id": "u-3", "text": "hi"}, "headers": {"Authorization": "Basic x"}}),
    ("invalid credential", {"json": {"user_id": "u-3", "text": "hi"}, "headers": auth("wrong")}),
    ("another role", {"json": {"user_id": "u-3", "text": "hi"}, "headers": ALICE}),
    ("not JSON", {"content": b"user_id=u", "headers": {**APP, "Content-Type": "application/x-www-form-urlencoded"}}),
    ("empty body", {"content": b"", "headers": {**APP, "Content-Type": "application/json"}}),
    ("malformed JSON", {"content": b"{\"user_id\": ", "headers": {**APP, "Content-Type": "application/json"}}),
    ("a bad field", {"json": {"user_id": "u 4", "text": "hi"}, "headers": APP}),
    ("an unknown field", {"json": {"user_id": "u-4", "text": "hi", "mood": "bad"}, "headers": APP}),
    ("no text", {"json": {"user_id": "u-4", "text": "   "}, "headers": APP}),
    ("a bad amount", {"json": {"user_id": "u-4", "text": "hi", "amount": "12.3.4"}, "headers": APP}),
]


@pytest.mark.parametrize("name,request_args", CASES, ids=[name for name, _ in CASES])
async def test_a_request_gets_the_frameworks_answer(both, name, request_args):
    direct, framework, calls = both
    got = await direct.post("/v1/messages", **request_args)
    expected = await framework.post("/v1/messages", **request_args)
    assert calls == ["/v1/messages"], "the direct route answered"
    assert _answer(got) == _answer(expected)


async def test_retries_answer_alike_and_store_one_message(both, store):
    direct, framework, calls = both
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
    assert [_answer(r) for r in conflicts][0] == [_answer(r) for r in conflicts][1]
    assert conflicts[0].status_code == 409
    assert len(calls) == 3
    assert (await store.message_state(mid))["status"] == "received"


async def test_what_is_not_plain_goes_to_the_framework(both, settings):
    direct, framework, calls = both

    chunks = [{"type": "http.request", "body": b'{"user_id": "u-5", ', "more_body": True},
              {"type": "http.request", "body": b'"text": "refund please"}', "more_body": False}]
    sent = await _call(direct, _scope(None), chunks)
    assert sent[0]["status"] == 202 and calls == []  # no length declared: read by the framework
    over = b" " * (settings.max_body_bytes + 1)
    r = await direct.post("/v1/messages", content=over, headers={**APP, "Content-Type": "application/json"})
    assert r.status_code == 413 and calls == []
    r = await direct.post("/v1/messages/", json={"user_id": "u-5", "text": "hi"}, headers=APP)
    assert _answer(r) == _answer(await framework.post("/v1/messages/", json={"user_id": "u-5", "text": "hi"},
                                                      headers=APP))
    assert calls == []
    assert plain({"headers": [(b"content-length", b"10")]}, 10)
    assert plain({"headers": [(b"Content-Length", b"0")]}, 10)
    for headers in ([], [(b"content-length", b"11")], [(b"content-length", b"-1")], [(b"content-length", b"1 ")],
                    [(b"content-length", b"1"), (b"content-length", b"1")],
                    [(b"content-length", b"1"), (b"transfer-encoding", b"chunked")]):
        assert not plain({"headers": headers}, 10), headers
    assert not plain({"headers": [(b"content-length", b"1")], "root_path": "/api"}, 10)


async def test_a_body_over_the_limit_as_it_arrives_is_refused(settings):
    """A declared length within the limit but more bytes sent (a lying client): 413 from the
    direct route, as the framework's read_body answers, and nothing stored."""
    from gateway.app import create_app

    app = create_app(settings)
    chunks = [{"type": "http.request", "body": b"{" + b" " * settings.max_body_bytes, "more_body": True},
              {"type": "http.request", "body": b"}", "more_body": False}]
    async with AsyncTestClient(app=app) as client:
        sent = await _call(client, _scope(b"10"), chunks)
    assert sent[0]["status"] == 413
    assert b"payload_too_large" in sent[1]["body"]


async def test_a_client_gone_mid_body_leaves_nothing(settings, store):
    from gateway.app import create_app

    app = create_app(settings)
    chunks = [{"type": "http.request", "body": b'{"user_id": "u-6", ', "more_body": True}, {"type": "http.disconnect"}]
    async with AsyncTestClient(app=app) as client:
        sent = await _call(client, _scope(b"40"), chunks)
        assert sent == []
        assert await store.r.keys(f"{settings.redis_prefix}msg:*") == []
        r = await client.post("/v1/messages", json={"user_id": "u-6", "text": "hi"}, headers=APP)
        assert r.status_code == 202  # (what the pattern finds for a message taken in)
        taken = f"{settings.redis_prefix}msg:{r.json()['message_id']}".encode()
        assert await store.r.keys(f"{settings.redis_prefix}msg:*") == [taken]


def test_a_direct_route_needs_an_ordinary_one(settings):
    from gateway.app import create_app

    app = create_app(settings)

    async def handler(request):  # pragma: no cover - never called
        raise AssertionError

    with pytest.raises(ValueError, match="no ordinary route"):
        app.use_direct({"POST /v1/elsewhere": handler}, settings.max_body_bytes)
    with pytest.raises(ValueError, match="no ordinary route"):
        app.use_direct({"PUT /v1/messages": handler}, settings.max_body_bytes)


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
