import pytest

from gateway.settings import load_settings

from plugins.settings import Settings, SettingsError


def test_defaults_and_credentials():
    s = load_settings({"GATEWAY_APP_KEYS": "app:abcdefgh12,plainkey99", "GATEWAY_AGENT_TOKENS": "alice:tok-alice-1"})
    assert s.redis_url is None
    assert [c.principal for c in s.app_keys] == ["app", "app2"]
    assert s.agent_tokens[0].principal == "alice"
    assert s.max_text_chars == 8000


def test_an_empty_environment_gives_every_fields_own_default():
    """The defaults are written once, on the fields (plugins/settings.py): what the environment
    leaves unset is exactly that (the models directory is worked out from the var directory)."""
    read, declared = load_settings({}), Settings()
    for name in Settings.__struct_fields__:
        if name != "models_dir":
            assert getattr(read, name) == getattr(declared, name), name
    assert read.models_path == declared.models_path


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
        ({"GATEWAY_CATEGORISER": "magic"}, "GATEWAY_CATEGORISER"),
        ({"GATEWAY_REDIS_PREFIX": "has space"}, "GATEWAY_REDIS_PREFIX"),
        ({"GATEWAY_WORKER_POLL_SECONDS": "soon"}, "GATEWAY_WORKER_POLL_SECONDS"),
        ({"REDIS_URL": "redis+sentinel://127.0.0.1:26379"}, "REDIS_URL"),  # no service name
        ({"GATEWAY_REDIS_WAIT_REPLICAS": "-1"}, "GATEWAY_REDIS_WAIT_REPLICAS"),
        ({"GATEWAY_REDIS_WAIT_MS": "0"}, "GATEWAY_REDIS_WAIT_MS"),
        ({"GATEWAY_EVIDENCE_FETCH_TRIES": "0"}, "GATEWAY_EVIDENCE_FETCH_TRIES"),
        ({"GATEWAY_EVIDENCE_FETCH_BACKOFF_SECONDS": "soon"}, "GATEWAY_EVIDENCE_FETCH_BACKOFF_SECONDS"),
        ({"GATEWAY_EVIDENCE_FETCH_TIMEOUT_SECONDS": "0"}, "GATEWAY_EVIDENCE_FETCH_TIMEOUT_SECONDS"),
        ({"GATEWAY_WORKER_NICE": "20"}, "GATEWAY_WORKER_NICE"),
        ({"GATEWAY_WORKER_NICE": "-1"}, "GATEWAY_WORKER_NICE"),
        ({"GATEWAY_WORKER_NICE": "lazy"}, "GATEWAY_WORKER_NICE"),
    ],
)
def test_a_bad_setting_is_named(env, names):
    with pytest.raises(SettingsError, match=names):
        load_settings(env)


def test_the_worker_can_be_asked_to_run_idle():
    assert (load_settings({}).worker_nice, load_settings({}).worker_idle) == (0, False)
    seven = load_settings({"GATEWAY_WORKER_NICE": "7"})
    assert (seven.worker_nice, seven.worker_idle) == (7, False)
    idle = load_settings({"GATEWAY_WORKER_NICE": "Idle"})
    assert (idle.worker_nice, idle.worker_idle) == (19, True)  # (19: where SCHED_IDLE is refused)


def test_the_worker_claims_at_most_once_in_its_claim_gap():
    assert load_settings({}).worker_claim_gap_ms == 20
    assert load_settings({"GATEWAY_WORKER_CLAIM_GAP_MS": "0"}).worker_claim_gap_ms == 0  # (as soon as woken)
    assert load_settings({"GATEWAY_WORKER_CLAIM_GAP_MS": "50"}).worker_claim_gap_ms == 50
    for bad in ("-1", "1001", "0.5"):
        with pytest.raises(SettingsError, match="GATEWAY_WORKER_CLAIM_GAP_MS"):
            load_settings({"GATEWAY_WORKER_CLAIM_GAP_MS": bad})


def test_the_worker_keeps_to_a_share_of_a_core_in_a_surge_unless_told_not_to():
    default = load_settings({})
    assert (default.worker_surge_share, default.worker_surge_lag_seconds) == (0.2, 0.5)
    assert default.worker_surge_most_behind_seconds == 0  # (no bound)
    never = load_settings({"GATEWAY_WORKER_SURGE_SHARE": "1", "GATEWAY_WORKER_SURGE_LAG_SECONDS": "2.5",
                           "GATEWAY_WORKER_SURGE_MOST_BEHIND_SECONDS": "20"})
    assert (never.worker_surge_share, never.worker_surge_lag_seconds) == (1.0, 2.5)
    assert never.worker_surge_most_behind_seconds == 20
    with pytest.raises(SettingsError, match="GATEWAY_WORKER_SURGE_MOST_BEHIND_SECONDS"):
        load_settings({"GATEWAY_WORKER_SURGE_MOST_BEHIND_SECONDS": "-5"})
    for bad in ("0", "1.5", "half"):
        with pytest.raises(SettingsError, match="GATEWAY_WORKER_SURGE_SHARE"):
            load_settings({"GATEWAY_WORKER_SURGE_SHARE": bad})
    with pytest.raises(SettingsError, match="GATEWAY_WORKER_SURGE_LAG_SECONDS"):
        load_settings({"GATEWAY_WORKER_SURGE_LAG_SECONDS": "-1"})


def test_cli_refuses_to_start_naming_the_setting():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "gateway", "worker"], env={"REDIS_URL": "ftp://nope", "PATH": ""},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "REDIS_URL" in out.stderr


# The design's configuration names for the channels, read by the shipped plugins.toml.
CONTRACT_PLUGIN_NAMES = [
    "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE",
    "META_APP_SECRET", "META_VERIFY_TOKEN", "META_ACCESS_TOKEN", "META_GRAPH_BASE",
    "TELEGRAM_BOT_TOKEN", "TELEGRAM_SECRET_TOKEN", "TELEGRAM_API_BASE",
    "WECHAT_APPID", "WECHAT_APPSECRET", "WECHAT_TOKEN", "WECHAT_AES_KEY", "WECHAT_API_BASE",
    "IMAP_HOST", "IMAP_PORT", "IMAP_USER", "IMAP_PASSWORD", "IMAP_FOLDER", "IMAP_SECURITY",
    "SMTP_HOST", "SMTP_PORT", "SMTP_USER", "SMTP_PASSWORD", "SMTP_SECURITY", "SMTP_FROM",
]


def _strings(value):
    if isinstance(value, dict):
        for inner in value.values():
            yield from _strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("name", CONTRACT_PLUGIN_NAMES)
def test_plugins_toml_reads_every_contract_name(name):
    from pathlib import Path

    from plugins.manager import read_plugins_toml

    config = read_plugins_toml(Path(__file__).resolve().parents[2] / "plugins.toml", {name: "sentinel-4711"})
    assert any("sentinel-4711" in s for s in _strings(config["plugins"])), f"plugins.toml does not read {name}"


@pytest.mark.parametrize("env, plugin, field, expected", [
    ({"TELEGRAM_SECRET_TOKEN": "new", "TELEGRAM_SECRET": "old"}, "telegram", "secret_token", "new"),
    ({"TELEGRAM_SECRET": "old"}, "telegram", "secret_token", "old"),
    ({"WECHAT_APPID": "wx-new", "WECHAT_APP_ID": "wx-old"}, "wechat", "app_id", "wx-new"),
    ({"WECHAT_APP_ID": "wx-old"}, "wechat", "app_id", "wx-old"),
    ({"WECHAT_APPSECRET": "new", "WECHAT_APP_SECRET": "old"}, "wechat", "app_secret", "new"),
    ({"WECHAT_APP_SECRET": "old"}, "wechat", "app_secret", "old"),
    ({"META_ACCESS_TOKEN": "shared"}, "meta", "whatsapp_token", "shared"),
    ({"META_ACCESS_TOKEN": "shared"}, "meta", "page_token", "shared"),
    ({"META_ACCESS_TOKEN": "shared", "META_WHATSAPP_TOKEN": "wa"}, "meta", "whatsapp_token", "wa"),
    ({"META_ACCESS_TOKEN": "shared", "META_PAGE_TOKEN": "page"}, "meta", "page_token", "page"),
])
def test_contract_names_win_and_earlier_names_still_work(env, plugin, field, expected):
    from pathlib import Path

    from plugins.manager import GatewayPlugins

    plugins = GatewayPlugins.load(Path(__file__).resolve().parents[2] / "plugins.toml", autoload=False, env=env)
    assert getattr(plugins.loaded[plugin].settings, field) == expected


def test_the_evidence_fetch_is_configured_from_the_environment():
    from router.evidence_fetch import FetchPolicy

    s = load_settings({"GATEWAY_EVIDENCE_FETCH_TRIES": "4", "GATEWAY_EVIDENCE_FETCH_BACKOFF_SECONDS": "0.5",
                       "GATEWAY_EVIDENCE_FETCH_TIMEOUT_SECONDS": "7"})
    assert (s.evidence_fetch_tries, s.evidence_fetch_backoff_seconds, s.evidence_fetch_timeout_seconds) == (4, 0.5, 7.0)
    policy = FetchPolicy.of(s)
    assert (policy.tries, policy.first_backoff_s) == (4, 0.5)


def test_the_categoriser_is_configured_from_the_environment(tmp_path):
    from pathlib import Path

    s = load_settings({"GATEWAY_VAR_DIR": str(tmp_path / "v")})
    assert s.categoriser == "model" and s.models_path == tmp_path / "v" / "models"
    s = load_settings({"GATEWAY_MODELS_DIR": str(tmp_path / "m"), "GATEWAY_CATEGORISER": "Keywords"})
    assert s.categoriser == "keywords" and s.models_path == tmp_path / "m"
    from plugins.settings import Settings

    assert Settings(var_dir=Path("elsewhere")).models_path == Path("elsewhere") / "models"
