"""An integrator's package, installed beside the gateway (examples/signed_webhook_channel,
installed by `make test` like any package), is found through its entry point and works without
any change to this repository."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib.metadata import entry_points

import pytest

from plugins.hookspecs import ENTRY_POINT_GROUP
from plugins.manager import GatewayPlugins
from tests.conftest import ROOT, SUPERVISOR, gateway_client, make_env, run_worker

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name, value, dist", [
    ("signed_webhook", "signed_webhook_channel:SignedWebhookChannel", "gateway-signed-webhook"),
    ("line", "line_channel:LineChannel", "gateway-line-channel"),
])
def test_the_example_packages_declare_their_entry_points(name, value, dist):
    (ep,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == name]
    assert ep.value == value and ep.dist.name == dist


async def test_the_gateway_loads_it_from_the_entry_point_and_takes_its_messages(settings, tmp_path):
    from msgspec.structs import replace

    from signed_webhook_channel import sign

    toml = tmp_path / "plugins.toml"
    toml.write_text('[gateway]\nautoload = true\n\n[plugins.app]\nenabled = true\n\n'
                    '[plugins.signed_webhook.settings]\nsecret = "${PARTNER_SECRET}"\n')
    plugins = GatewayPlugins.load(toml, autoload=True, env={"PARTNER_SECRET": "s3"})
    loaded = plugins.loaded["signed_webhook"]
    assert loaded.source.startswith("plugins.toml + entry point (gateway-signed-webhook")
    assert loaded.hooks == ["channel_sender", "gateway_routes"]
    body = json.dumps({"events": [{"type": "message", "id": "p-1", "from": "partner-7",
                                   "text": "refund never arrived"}]}).encode()
    ts = str(int(time.time()))
    async with gateway_client(replace(settings, plugins_path=toml), plugins) as client:
        r = await client.post("/webhooks/signed_webhook", content=body,
                              headers={"X-Timestamp": ts, "X-Signature": sign("s3", ts, body)})
        assert r.status_code == 202, r.text
        await run_worker(settings, plugins)
        (c,) = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
        assert (c["channel"], c["contact"]["kind"]) == ("signed_webhook", "partner_user")


def test_gateway_plugins_list_shows_where_it_came_from(redis_url, prefix, tmp_path):
    env = make_env(redis_url, prefix, tmp_path, GATEWAY_PLUGINS_AUTOLOAD="1")
    out = subprocess.run([sys.executable, "-m", "gateway", "plugins", "list", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["signed_webhook"]["source"] == "entry point (gateway-signed-webhook)"
    assert rows["signed_webhook"]["hooks"] == ["channel_sender", "gateway_routes"]
