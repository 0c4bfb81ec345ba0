"""Fuzzing: whatever arrives — any bytes as a mail, any JSON or bytes as a webhook body, signed
or not — ends as a message, a clear refusal or a quarantine entry; never an unhandled exception
(a 500)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

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


@given(st.sampled_from(["whatsapp_business_account", "page", "instagram"]), json_values)
@hsettings(max_examples=400, deadline=None)
def test_any_meta_entry_parses_or_is_malformed(obj, entry):
    from adapters.meta import Malformed
    from normalizer.inbound import InputRejected

    try:
        parse_entry(obj, entry, 8000)
    except (Malformed, InputRejected, TypeError, AttributeError, ValueError):
        pass  # exactly what the webhook catches and quarantines


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
