import pytest

from gateway.settings import SettingsError, load_settings


def test_defaults_and_credentials():
    s = load_settings({"GATEWAY_APP_KEYS": "app:abcdefgh12,plainkey99", "GATEWAY_AGENT_TOKENS": "alice:tok-alice-1"})
    assert s.redis_url is None
    assert [c.principal for c in s.app_keys] == ["app", "app2"]
    assert s.agent_tokens[0].principal == "alice"
    assert s.max_text_chars == 8000


@pytest.mark.parametrize(
    "env, names",
    [
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"GATEWAY_PUBLIC_URL": "ftp://x"}, "GATEWAY_PUBLIC_URL"),
        ({"GATEWAY_APP_KEYS": "short"}, "GATEWAY_APP_KEYS"),
        ({"GATEWAY_AGENT_TOKENS": "bad name!:abcdefghij"}, "GATEWAY_AGENT_TOKENS"),
        ({"GATEWAY_MAX_TEXT_CHARS": "lots"}, "GATEWAY_MAX_TEXT_CHARS"),
        ({"GATEWAY_MAX_TEXT_CHARS": "0"}, "GATEWAY_MAX_TEXT_CHARS"),
        ({"GATEWAY_PLUGINS_AUTOLOAD": "maybe"}, "GATEWAY_PLUGINS_AUTOLOAD"),
        ({"GATEWAY_LOG_LEVEL": "LOUD"}, "GATEWAY_LOG_LEVEL"),
        ({"GATEWAY_REDIS_PREFIX": "has space"}, "GATEWAY_REDIS_PREFIX"),
        ({"GATEWAY_WORKER_POLL_SECONDS": "soon"}, "GATEWAY_WORKER_POLL_SECONDS"),
        ({"REDIS_URL": "redis+sentinel://127.0.0.1:26379"}, "REDIS_URL"),  # no service name
        ({"GATEWAY_REDIS_WAIT_REPLICAS": "-1"}, "GATEWAY_REDIS_WAIT_REPLICAS"),
        ({"GATEWAY_REDIS_WAIT_MS": "0"}, "GATEWAY_REDIS_WAIT_MS"),
    ],
)
def test_a_bad_setting_is_named(env, names):
    with pytest.raises(SettingsError, match=names):
        load_settings(env)


def test_cli_refuses_to_start_naming_the_setting():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "gateway", "worker"], env={"REDIS_URL": "ftp://nope", "PATH": ""},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "REDIS_URL" in out.stderr
