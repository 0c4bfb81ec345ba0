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
    assert len(hooks) == 8, hooks
    for hook in hooks:
        assert f"| `{hook}` |" in text, f"hook {hook} is not documented in {doc}"


def test_plugins_list_cli(tmp_path):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "gateway", "plugins", "list"],
                         env={"GATEWAY_PLUGINS": str(write(tmp_path, "[plugins.app]\n")), "GATEWAY_PLUGINS_AUTOLOAD": "0",
                              "PATH": ""}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "app" in out.stdout and "adapters.app:AppChannel" in out.stdout and "channel_sender" in out.stdout


# -- sync and async hooks (docs/plugins.md "Sync or async") -------------------------------------


class _Sender:
    async def send(self, message):
        return None


async def _run(services):
    return None


class SyncChannel:
    @hookimpl
    def channel_sender(self, channel, services):
        return _Sender() if channel == "sync_ch" else None

    @hookimpl
    def gateway_routes(self, services):
        from plugins.contract import RouteMount

        return RouteMount(handlers=[])

    @hookimpl
    def gateway_pollers(self, services):
        from plugins.contract import Poller

        return [Poller("inbox", _run)]


class AsyncSender:
    @hookimpl
    async def channel_sender(self, channel, services):
        return _Sender()


class AsyncRoutes:
    @hookimpl
    async def gateway_routes(self, services):
        return None


class AsyncPollers:
    @hookimpl
    async def gateway_pollers(self, services):
        return []


class AsyncClassifier:
    @hookimpl
    async def classify_message(self, message):
        return Classification(category="fee_dispute")


def test_sync_routes_pollers_and_sender_are_taken():
    plugins = GatewayPlugins()
    plugins.register("sync_ch", SyncChannel())
    plugins.check()
    assert isinstance(plugins.sender("sync_ch", services=None), _Sender)
    assert plugins.sender("other", services=None) is None
    assert [name for name, _ in plugins.routes(services=None)] == ["sync_ch"]
    assert [(name, p.name) for name, p in plugins.pollers(services=None)] == [("sync_ch", "inbox")]
    assert not plugins.errors


@pytest.mark.parametrize("plugin, hook", [(AsyncSender, "channel_sender"), (AsyncRoutes, "gateway_routes"),
                                          (AsyncPollers, "gateway_pollers")])
def test_an_async_def_routes_pollers_or_sender_is_refused_at_load_naming_plugin_and_hook(plugin, hook):
    plugins = GatewayPlugins()
    with pytest.raises(PluginConfigError, match=rf"plugin 'late_one': hook {hook} must be a plain function "
                                                r"\(def\), not async def"):
        plugins.register("late_one", plugin())
    assert "late_one" not in plugins.loaded and plugins.pm.get_plugin("late_one") is None
    plugins.register("late_one", SyncChannel())  # the name is free again: nothing half-registered


def test_the_first_sender_wins_and_every_plugin_is_asked():
    asked: list[str] = []
    senders = {"last": _Sender(), "second": _Sender()}

    def channel(name: str, answers: bool):
        class Channel:
            @hookimpl
            def channel_sender(self, channel, services):
                asked.append(name)
                if name == "broken":
                    raise RuntimeError("down")
                return senders[name] if answers else None
        return Channel()

    plugins = GatewayPlugins()
    for name, answers in [("last", True), ("second", True), ("broken", False), ("silent", False)]:
        plugins.register(name, channel(name, answers))  # asked in the reverse order, as pluggy asks
    assert plugins.sender("any", services=None) is senders["second"]
    assert plugins.sender("any", services=None) is senders["second"]
    assert asked == ["silent", "broken", "second", "last"] * 2  # in pluggy's order, each every time
    assert plugins.errors["broken"] == 2 and not plugins.errors["last"]


def test_an_async_sender_in_plugins_toml_stops_start_up(tmp_path, monkeypatch):
    mod = types.ModuleType("fake_async_sender_mod")
    mod.AsyncSender = AsyncSender
    monkeypatch.setitem(sys.modules, "fake_async_sender_mod", mod)
    path = write(tmp_path, '[plugins.mine]\nuse = "fake_async_sender_mod:AsyncSender"\n')
    with pytest.raises(PluginConfigError, match="plugin 'mine': hook channel_sender must be a plain function"):
        GatewayPlugins.load(path, autoload=False, env={})


def test_a_sender_hook_answering_with_a_coroutine_is_a_counted_failure_not_a_sender(recwarn):
    class SneakySender:
        @hookimpl
        def channel_sender(self, channel, services):
            return AsyncSender().channel_sender(channel, services)  # a plain def handing back a coroutine

    plugins = GatewayPlugins()
    plugins.register("sneaky", SneakySender())
    plugins.register("sync_ch", SyncChannel())  # registered last: asked first
    assert isinstance(plugins.sender("sync_ch", services=None), _Sender)
    assert plugins.sender("other", services=None) is None  # the coroutine is not taken as a sender
    assert plugins.errors["sneaky"] == 2  # asked both times, also after sync_ch answered
    import gc

    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


async def test_async_def_is_fine_for_the_hooks_the_gateway_awaits():
    from datetime import datetime, timezone

    from normalizer.schema import Contact, InboundMessage

    plugins = GatewayPlugins()
    plugins.register("async_classifier", AsyncClassifier())
    plugins.check()
    message = InboundMessage(id="msg_2", channel="app", sender=Contact(kind="app_user", value="u2"),
                             text="a fee", received_at=datetime.now(timezone.utc))
    name, verdict = await plugins.classify(message)
    assert name == "async_classifier" and verdict.category == "fee_dispute"
