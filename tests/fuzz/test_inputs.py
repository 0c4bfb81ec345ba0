"""Fuzzing: whatever arrives — any bytes as a mail, any JSON or bytes as a webhook body, signed
or not — ends as a message, a clear refusal or a quarantine entry; never an unhandled exception
(a 500)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from adapters.email import EmailChannel, parse_or_none
from adapters.meta import MetaChannel, MetaSettings, parse_entry
from adapters.telegram import TelegramChannel, TelegramSettings
from adapters.wechat import WeChatChannel, WeChatSettings, sha1_signature
from plugins.manager import GatewayPlugins
from adapters.app import AppChannel
from tests.conftest import APP

FUZZ = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30)
MAIL_HEADERS = ["From", "To", "Subject", "Message-ID", "Content-Type", "Content-Transfer-Encoding", "In-Reply-To",
                "Auto-Submitted", "MIME-Version", "Date"]


@given(st.binary(max_size=4000))
@hsettings(max_examples=400, deadline=None)
def test_any_bytes_as_a_mail_parse_or_explain(raw):
    parsed, problem = parse_or_none(raw, EmailChannel.Settings())
    assert (parsed is None) == bool(problem) or parsed is not None


@given(st.lists(st.tuples(st.sampled_from(MAIL_HEADERS), st.text(max_size=60)), max_size=8),
       st.binary(max_size=2000))
@hsettings(max_examples=300, deadline=None)
def test_mail_shaped_input_parses_or_explains(headers, body):
    raw = b"".join(f"{k}: {v}".encode("utf-8", "surrogateescape") + b"\r\n" for k, v in headers) + b"\r\n" + body
    parse_or_none(raw, EmailChannel.Settings())


_text = st.text(max_size=20)
_ids = st.text("0123456789abcdef.", min_size=1, max_size=12)
_media = st.fixed_dictionaries({"id": _ids, "caption": _text, "mime_type": _text, "filename": _text})
_wa_message = st.one_of(*(st.fixed_dictionaries({
    "from": _ids, "id": _ids, "timestamp": st.integers(0, 2**32).map(str), "type": st.just(kind),
    "context": st.fixed_dictionaries({"id": _ids}), kind: shape}) for kind, shape in [
        ("text", st.fixed_dictionaries({"body": _text})), ("image", _media), ("document", _media),
        ("audio", _media), ("location", st.fixed_dictionaries({"name": _text, "address": _text})),
        ("button", st.fixed_dictionaries({"text": _text})),
        ("interactive", st.fixed_dictionaries({"button_reply": st.fixed_dictionaries({"title": _text})})),
        ("reaction", st.fixed_dictionaries({"emoji": _text}))]))
_wa_status = st.fixed_dictionaries({
    "id": _ids, "status": st.sampled_from(["sent", "delivered", "read", "failed"]),
    "timestamp": st.integers(0, 2**32).map(str),
    "errors": st.lists(st.fixed_dictionaries({"code": st.integers(), "title": _text}), max_size=1)})
_wa_entry = st.fixed_dictionaries({"id": _ids, "changes": st.lists(st.fixed_dictionaries({
    "field": st.just("messages"), "value": st.fixed_dictionaries({
        "messaging_product": st.just("whatsapp"), "metadata": st.fixed_dictionaries({"phone_number_id": _ids}),
        "contacts": st.lists(st.fixed_dictionaries({"wa_id": _ids, "profile": st.fixed_dictionaries(
            {"name": _text})}), max_size=1),
        "messages": st.lists(_wa_message, max_size=2), "statuses": st.lists(_wa_status, max_size=2)})}),
    min_size=1, max_size=2)})
_page_message = st.fixed_dictionaries({"mid": _ids, "text": _text, "attachments": st.lists(st.fixed_dictionaries({
    "type": st.sampled_from(["image", "video", "audio", "file", "fallback"]),
    "payload": st.fixed_dictionaries({"url": _text})}), max_size=2)})
_page_event = st.fixed_dictionaries(
    {"sender": st.fixed_dictionaries({"id": _ids}), "recipient": st.fixed_dictionaries({"id": _ids}),
     "timestamp": st.integers(0, 2**45)},
    optional={"message": _page_message, "postback": st.fixed_dictionaries({"mid": _ids, "title": _text}),
              "delivery": st.fixed_dictionaries({"mids": st.lists(_ids, max_size=2), "watermark": st.integers()}),
              "read": st.fixed_dictionaries({"mid": _ids, "watermark": st.integers()})})
_page_entry = st.fixed_dictionaries({"id": _ids, "time": st.integers(0, 2**45),
                                     "messaging": st.lists(_page_event, min_size=1, max_size=2)})


def _nodes(value, path=()):
    """Every place in a JSON document, as a path of keys and indexes."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from _nodes(inner, path + (key,))


def _replaced(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


@st.composite
def corrupted(draw, documents):
    """A document as the provider sends it with up to three of its parts replaced by any JSON value
    (a string where an object belongs, a list where a string does, null...)."""
    doc = draw(documents)
    for _ in range(draw(st.integers(1, 3))):
        doc = _replaced(doc, draw(st.sampled_from(list(_nodes(doc)))), draw(json_values))
    return doc


@given(st.tuples(st.just("whatsapp_business_account"), corrupted(_wa_entry))
       | st.tuples(st.sampled_from(["page", "instagram"]), corrupted(_page_entry))
       | st.tuples(st.sampled_from(["whatsapp_business_account", "page", "instagram"]), json_values))
@hsettings(max_examples=600, deadline=None)
def test_any_meta_entry_parses_or_is_malformed(case):
    obj, entry = case
    from adapters.meta import Inbound, Malformed
    from normalizer.inbound import InputRejected
    from normalizer.schema import InboundMessage

    try:
        found = parse_entry(obj, entry, 8000)
    except (Malformed, InputRejected):
        return  # what parse_entry documents: the webhook quarantines that entry
    for item in found:  # what it does take, the worker can read back (no number where a name belongs)
        if isinstance(item, Inbound):
            assert msgspec.msgpack.decode(msgspec.msgpack.encode(item.message), type=InboundMessage) == item.message


@pytest.fixture
def client(settings):
    from litestar.testing import TestClient

    from gateway.app import create_app

    plugins = GatewayPlugins()
    plugins.register("meta", MetaChannel(MetaSettings(app_secret="s", verify_token="v")))
    plugins.register("telegram", TelegramChannel(TelegramSettings(bot_token="1:x", secret_token="t")))
    plugins.register("wechat", WeChatChannel(WeChatSettings(token="w", app_id="wx1", app_secret="x")))
    plugins.register("app", AppChannel())
    with TestClient(app=create_app(settings, plugins=plugins), raise_server_exceptions=False) as c:
        yield c


def no_server_error(response):
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.text[:300])


@given(json_values | st.binary(max_size=500).map(lambda b: {"_bytes": b.hex()}))
@FUZZ
def test_meta_any_signed_body(client, value):
    body = json.dumps(value).encode()
    signature = "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
    r = client.post("/webhooks/meta", content=body, headers={"X-Hub-Signature-256": signature})
    no_server_error(r)
    assert r.status_code == 200


_WA_TEXT = {"id": "wamid.1", "from": "8613800138000", "type": "text", "timestamp": "1700000000",
            "text": {"body": "charged twice"}}


def _wa(**value):
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": value}]}]}


@pytest.mark.parametrize("payload", [
    _wa(statuses=[{"id": "s1", "status": "failed", "errors": {"code": 1}}]),  # a KeyError: was a 500
    _wa(messages=[{**_WA_TEXT, "text": "charged twice"}]),
    _wa(contacts=5, messages=[_WA_TEXT]),
    _wa(metadata="x", messages=[_WA_TEXT]),
    {"object": "page", "entry": [{"id": "1", "messaging": [{"sender": 5, "message": {"mid": "m", "text": "x"}}]}]},
], ids=["status_errors_object", "text_a_string", "contacts_a_number", "metadata_a_string", "sender_a_number"])
def test_meta_signed_entry_of_the_wrong_shape_is_quarantined(client, payload):
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()
    r = client.post("/webhooks/meta", content=body, headers={"X-Hub-Signature-256": signature})
    assert r.status_code == 200 and r.json()["quarantined"] == 1, r.text


@pytest.mark.parametrize("field, value", [("profile", {"name": 12345}), ("filename", ["receipt.pdf"])])
def test_meta_values_of_the_wrong_type_never_reach_the_stored_message(field, value):
    """A number where Meta sends a name was taken into the message, which the worker then could
    not read back (a message stuck in its queue)."""
    from adapters.meta import Inbound
    from normalizer.schema import InboundMessage

    message = {**_WA_TEXT, "type": "document", "document": {"id": "9", "caption": "receipt"}}
    contact = {"wa_id": "8613800138000"}
    if field == "profile":
        contact["profile"] = value
    else:
        message["document"]["filename"] = value
    entry = _wa(contacts=[contact], messages=[message])["entry"][0]
    (item,) = parse_entry("whatsapp_business_account", entry, 8000)
    assert isinstance(item, Inbound)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(item.message), type=InboundMessage) == item.message


@pytest.mark.parametrize("file_name", [12345, ["receipt.pdf"], {"a": 1}])
def test_telegram_a_file_name_of_the_wrong_type_never_reaches_the_stored_message(file_name):
    from adapters.telegram import _attachments
    from normalizer.schema import EvidenceLink

    document = {"file_id": "BQACAgIAAxk", "file_name": file_name, "mime_type": "application/pdf"}
    links = _attachments({"document": document})
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(links), type=list[EvidenceLink]) == links


@given(json_values)
@FUZZ
def test_telegram_any_update(client, value):
    r = client.post("/webhooks/telegram", content=json.dumps(value).encode(),
                    headers={"X-Telegram-Bot-Api-Secret-Token": "t"})
    no_server_error(r)
    assert r.status_code in (200, 429)


@given(st.binary(max_size=2000) | st.text(max_size=300).map(lambda t: f"<xml>{t}</xml>".encode()))
@FUZZ
def test_wechat_any_signed_body(client, body):
    ts, nonce = str(int(time.time())), "123"
    r = client.post("/webhooks/wechat", content=body,
                    params={"signature": sha1_signature("w", ts, nonce), "timestamp": ts, "nonce": nonce})
    no_server_error(r)
    assert r.status_code in (200, 429)


@given(json_values)
@FUZZ
def test_app_any_json(client, value):
    r = client.post("/v1/messages", content=json.dumps(value).encode(),
                    headers={**APP, "Content-Type": "application/json"})
    no_server_error(r)
    assert r.status_code in (202, 400, 409, 413, 415, 422, 429)


@pytest.mark.parametrize("timestamp", ["99999999999999", "-99999999999", str(2**62)])
def test_a_meta_timestamp_no_clock_holds_is_the_time_it_arrived(timestamp):
    """Found by the fuzz test above: a WhatsApp message's timestamp beyond what a datetime or the
    platform's time_t holds raised out of the parser instead of being read, as a timestamp that is
    not a number is, as the time the webhook arrived."""
    from datetime import datetime, timedelta, timezone

    from adapters.meta import Inbound

    entry = {"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": "2"},
        "contacts": [{"wa_id": "8613800000000", "profile": {"name": "A"}}],
        "messages": [{"from": "8613800000000", "id": "wamid.1", "timestamp": timestamp, "type": "text",
                      "text": {"body": "charged twice"}}]}}]}
    found = [item for item in parse_entry("whatsapp_business_account", entry, 8000) if isinstance(item, Inbound)]
    assert len(found) == 1
    assert abs(found[0].message.received_at - datetime.now(timezone.utc)) < timedelta(minutes=1)
