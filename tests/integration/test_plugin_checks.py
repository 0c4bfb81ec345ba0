"""What `python -m gateway plugins check` and start-up refuse: a setting a plugin needs left
empty (named with the variable to set), and two plugins answering on the same path."""

from __future__ import annotations

import subprocess
import sys

import pytest
from litestar import post

from gateway.app import create_app
from plugins.contract import RouteMount
from plugins.hookspecs import hookimpl
from plugins.manager import GatewayPlugins, PluginConfigError
from tests.conftest import ROOT, make_env

pytestmark = pytest.mark.integration

PARTNER_TOML = '''[gateway]
autoload = false

[plugins.partner]
use = "signed_webhook_channel:SignedWebhookChannel"
[plugins.partner.settings]
secret = "${PARTNER_SECRET}"
callback_url = "${PARTNER_CALLBACK_URL:-https://partner.example.test/callback}"
'''


def test_plugins_check_names_the_variable_of_an_empty_setting_a_plugin_needs(redis_url, prefix, tmp_path):
    toml = tmp_path / "plugins.toml"
    toml.write_text(PARTNER_TOML)
    env = make_env(redis_url, prefix, tmp_path, GATEWAY_PLUGINS=str(toml))

    def check(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "plugins", "check"], cwd=ROOT, env={**env, **extra},
                              capture_output=True, text=True, timeout=120)

    unset = check()
    assert unset.returncode == 2, unset.stdout + unset.stderr
    assert "plugin 'partner': setting 'secret' is empty (set PARTNER_SECRET)" in unset.stderr
    configured = check(PARTNER_SECRET="s3")
    assert configured.returncode == 0 and "ok (1 plugins)" in configured.stdout, configured.stderr


class SamePath:
    """A plugin that mounts its handler at /webhooks/shared, whatever its name."""

    @hookimpl
    def gateway_routes(self, services):
        @post("/in", operation_id=f"sharedIn{id(self)}", status_code=204)
        async def receive() -> None:
            return None

        return RouteMount(handlers=[receive], prefix="/webhooks/shared")


def test_two_plugins_mounting_the_same_path_stop_start_up(settings):
    plugins = GatewayPlugins()
    plugins.register("first", SamePath())
    plugins.register("second", SamePath())
    with pytest.raises(PluginConfigError, match=r"plugins 'first' and 'second' both mount POST /webhooks/shared/in"):
        create_app(settings, plugins=plugins)
