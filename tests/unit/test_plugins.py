"""Loading plugins from plugins.toml and entry points, isolation of failing plugins."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

from normalizer.schema import Classification
from plugins.hookspecs import hookimpl
from plugins.manager import GatewayPlugins, PluginConfigError, read_plugins_toml


class Exploding:
    @hookimpl
    def classify_message(self, message):
        raise RuntimeError("boom")


class Fixed:
    @hookimpl
    def classify_message(self, message):
        return Classification(category="fee_dispute")


class Misspelt:
    @hookimpl
    def clasify_message(self, message):  # not a hook
        return None


@pytest.fixture
def fake_module(monkeypatch):
    import msgspec

    mod = types.ModuleType("fake_plugin_mod")

    class WithSettings:
        class Settings(msgspec.Struct, forbid_unknown_fields=True):
            token: str
            retries: int = 3

        def __init__(self, settings):
            self.settings = settings

        @hookimpl
        def classify_message(self, message):
            return None

    mod.WithSettings = WithSettings
    mod.Misspelt = Misspelt
    monkeypatch.setitem(sys.modules, "fake_plugin_mod", mod)
    return mod


def write(tmp_path, text):
    path = tmp_path / "plugins.toml"
    path.write_text(textwrap.dedent(text))
    return path


async def test_a_raising_plugin_is_isolated_and_counted():
    plugins = GatewayPlugins()
    plugins.register("fixed", Fixed())
    plugins.register("exploding", Exploding())  # registered last: called first
    plugins.check()
    from datetime import datetime, timezone

    from normalizer.schema import Contact, InboundMessage

    message = InboundMessage(id="msg_1", channel="app", sender=Contact(kind="app_user", value="u1"),
                             text="fee too high", received_at=datetime.now(timezone.utc))
    name, verdict = await plugins.classify(message)
    assert name == "fixed" and verdict.category == "fee_dispute"
    assert plugins.errors["exploding"] == 1


def test_settings_come_from_toml_with_env_references(tmp_path, fake_module):
    path = write(tmp_path, """
        [plugins.mine]
        use = "fake_plugin_mod:WithSettings"
        [plugins.mine.settings]
        token = "${MY_TOKEN}"
        """)
    plugins = GatewayPlugins.load(path, autoload=False, env={"MY_TOKEN": "s3cret"})
    assert plugins.loaded["mine"].settings.token == "s3cret"
    assert plugins.loaded["mine"].hooks == ["classify_message"]


@pytest.mark.parametrize(
    "toml, message",
    [
        ('[plugins.mine]\nuse = "fake_plugin_mod:WithSettings"\n[plugins.mine.settings]\nretries = "x"\n', "mine"),
        ('[plugins.mine]\nuse = "fake_plugin_mod:WithSettings"\n[plugins.mine.settings]\ntoken="a"\nextra = 1\n', "extra"),
        ('[plugins.mine]\nuse = "no.such.module:X"\n', "cannot import"),
        ('[plugins.nobody]\nenabled = true\n', "no installed entry point"),
        ('[plugins.mine]\nuse = "fake_plugin_mod:Misspelt"\n', "clasify_message"),
        ('[plugins.Bad-Name]\n', "lowercase"),
        ('[plugins.mine]\nwhatever = 1\n', "unknown key"),
        ('this is not toml', "not valid TOML"),
    ],
)
def test_bad_plugin_config_stops_start_up_with_a_named_problem(tmp_path, fake_module, toml, message):
    with pytest.raises(PluginConfigError, match=message):
        GatewayPlugins.load(write(tmp_path, toml), autoload=False, env={})


def test_builtin_app_channel_comes_from_its_entry_point(tmp_path):
    plugins = GatewayPlugins.load(write(tmp_path, "[plugins.app]\n"), autoload=False)
    assert plugins.loaded["app"].target == "adapters.app:AppChannel"
    assert "entry point" in plugins.loaded["app"].source
    assert {"gateway_routes", "channel_sender"} <= set(plugins.loaded["app"].hooks)


def test_disabled_plugin_is_not_loaded(tmp_path):
    plugins = GatewayPlugins.load(write(tmp_path, "[plugins.app]\nenabled = false\n"), autoload=True)
    assert "app" not in plugins.loaded


def test_env_expansion_defaults():
    from plugins.manager import expand_env

    assert expand_env({"a": "${X:-dflt}", "b": ["${Y}"]}, {"Y": "y"}, "t") == {"a": "dflt", "b": ["y"]}


def test_missing_file_is_empty_config(tmp_path):
    assert read_plugins_toml(tmp_path / "none.toml") == {"gateway": {}, "plugins": {}}


@pytest.mark.parametrize("doc", ["README.md", "docs/plugins.md"])
def test_every_hook_is_documented(doc):
    """Fails when a hook in hookspecs.py is missing from the README table or the plugin guide's
    table (its name, and in the guide a table row that starts with it)."""
    from pathlib import Path

    from plugins import hookspecs

    text = (Path(__file__).resolve().parents[2] / doc).read_text()
    hooks = [n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, "complaint_gateway_spec")]
    assert len(hooks) == 7, hooks
    for hook in hooks:
        assert f"| `{hook}` |" in text, f"hook {hook} is not documented in {doc}"


def test_plugins_list_cli(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "gateway", "plugins", "list"],
                         env={"GATEWAY_PLUGINS": str(write(tmp_path, "[plugins.app]\n")), "GATEWAY_PLUGINS_AUTOLOAD": "0",
                              "PATH": ""}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "app" in out.stdout and "adapters.app:AppChannel" in out.stdout and "channel_sender" in out.stdout
