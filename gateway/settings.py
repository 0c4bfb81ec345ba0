"""Gateway settings, read once from the environment (12-factor): ``load_settings``.

The ``Settings`` type itself lives in ``plugins/settings.py`` (every layer reads it); each field
names the environment variable it comes from. A bad value stops start-up with a
`SettingsError` that names the variable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse


from plugins.settings import Credential, Settings, SettingsError

#: GATEWAY_CATEGORISER's values: the learned model (default) or the keyword rules.
CATEGORISERS = ("model", "keywords")
_PRINCIPAL_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def _parse_credentials(var: str, raw: str, kind: str) -> tuple[Credential, ...]:
    creds: list[Credential] = []
    for n, item in enumerate(filter(None, (p.strip() for p in raw.split(","))), start=1):
        principal, sep, token = item.partition(":")
        if not sep:
            token, principal = item, f"{kind}{n}"
        if not _PRINCIPAL_RE.match(principal):
            raise SettingsError(f"{var}: entry {n} has a bad name {principal!r} (letters, digits, _.@- only)")
        if len(token) < 8:
            raise SettingsError(f"{var}: entry {n} ({principal}) is shorter than 8 characters")
        creds.append(Credential(principal=principal, token=token))
    return tuple(creds)


#: ``GATEWAY_WORKER_NICE=idle``: the worker below every niceness (Linux's ``SCHED_IDLE``).
WORKER_IDLE = "idle"


def _worker_idle(env: Mapping[str, str]) -> bool:
    return env.get("GATEWAY_WORKER_NICE", "").strip().lower() == WORKER_IDLE


def _worker_nice(env: Mapping[str, str], default: int) -> int:
    """GATEWAY_WORKER_NICE: 0-19, or ``idle`` (niceness 19 and ``SCHED_IDLE``, see ``worker_idle``)."""
    return 19 if _worker_idle(env) else _int(env, "GATEWAY_WORKER_NICE", default, 0, 19)


def _int(env: Mapping[str, str], var: str, default: int, low: int, high: int) -> int:
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{var}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{var}: {value} is outside {low}..{high}")
    return value


def _float(env: Mapping[str, str], var: str, default: float, low: float, high: float) -> float:
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{var}: {raw!r} is not a number") from None
    if not low <= value <= high:
        raise SettingsError(f"{var}: {value} is outside {low}..{high}")
    return value


def _bool(env: Mapping[str, str], var: str, default: bool) -> bool:
    raw = env.get(var)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{var}: {raw!r} is not a boolean (use 1/0, true/false)")


#: The numeric settings: field -> (its environment variable, the least and the most it may be).
#: The type is the field's default's (a whole number or not), and the default is the field's.
_NUMBERS: dict[str, tuple[str, float, float]] = {
    "max_text_chars": ("GATEWAY_MAX_TEXT_CHARS", 1, 100_000),
    "max_body_bytes": ("GATEWAY_MAX_BODY_BYTES", 1024, 256 * 1024 * 1024),
    "max_evidence_bytes": ("GATEWAY_MAX_EVIDENCE_BYTES", 1024, 200 * 1024 * 1024),
    "claim_lease_seconds": ("GATEWAY_CLAIM_LEASE_SECONDS", 1, 86_400),
    "worker_max_jobs": ("GATEWAY_WORKER_MAX_JOBS", 1, 10_000),
    "worker_surge_share": ("GATEWAY_WORKER_SURGE_SHARE", 0.05, 1.0),
    "worker_surge_lag_seconds": ("GATEWAY_WORKER_SURGE_LAG_SECONDS", 0.0, 3600.0),
    "worker_surge_most_behind_seconds": ("GATEWAY_WORKER_SURGE_MOST_BEHIND_SECONDS", 0.0, 86_400.0),
    "worker_claim_gap_ms": ("GATEWAY_WORKER_CLAIM_GAP_MS", 0, 1000),
    "worker_poll_seconds": ("GATEWAY_WORKER_POLL_SECONDS", 0.001, 10),
    "job_timeout_seconds": ("GATEWAY_JOB_TIMEOUT_SECONDS", 1, 3600),
    "repeat_window_hours": ("GATEWAY_REPEAT_WINDOW_HOURS", 0, 24 * 90),
    "incident_window_minutes": ("GATEWAY_INCIDENT_WINDOW_MINUTES", 1, 24 * 60),
    "incident_min_customers": ("GATEWAY_INCIDENT_MIN_CUSTOMERS", 2, 100_000),
    "reopen_window_hours": ("GATEWAY_REOPEN_WINDOW_HOURS", 0, 24 * 365),
    "max_pending": ("GATEWAY_MAX_PENDING", 0, 100_000_000),
    "redis_wait_replicas": ("GATEWAY_REDIS_WAIT_REPLICAS", 0, 16),
    "redis_wait_ms": ("GATEWAY_REDIS_WAIT_MS", 1, 60_000),
    "contact_rate_per_minute": ("GATEWAY_CONTACT_RATE_PER_MINUTE", 0, 1_000_000),
    "channel_rate_per_second": ("GATEWAY_CHANNEL_RATE_PER_SECOND", 0, 10_000_000),
    "evidence_fetch_tries": ("GATEWAY_EVIDENCE_FETCH_TRIES", 1, 100),
    "evidence_fetch_backoff_seconds": ("GATEWAY_EVIDENCE_FETCH_BACKOFF_SECONDS", 0.01, 3600.0),
    "evidence_fetch_timeout_seconds": ("GATEWAY_EVIDENCE_FETCH_TIMEOUT_SECONDS", 0.1, 3600.0),
}


def _numbers(env: Mapping[str, str], base: Settings) -> dict[str, int | float]:
    """Every numeric setting of ``_NUMBERS``, read from ``env`` (its default: ``base``'s)."""
    read = {}
    for field, (var, low, high) in _NUMBERS.items():
        default = getattr(base, field)
        if isinstance(default, int):
            read[field] = _int(env, var, default, int(low), int(high))
        else:
            read[field] = _float(env, var, default, low, high)
    return read


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment; raise `SettingsError` naming the first bad variable."""
    env = os.environ if env is None else env
    base = Settings()  # each default here is the field's own, written once (plugins/settings.py)

    redis_url = env.get("REDIS_URL") or None
    if redis_url is not None:
        scheme = urlparse(redis_url).scheme
        if scheme not in {"redis", "rediss", "unix", "redis+sentinel"}:
            raise SettingsError("REDIS_URL: scheme must be redis://, rediss://, unix:// or redis+sentinel://, "
                                f"got {redis_url.split(':')[0]!r}")
        if scheme == "redis+sentinel":
            from router.redis_pool import parse_sentinel_url

            try:
                parse_sentinel_url(redis_url)
            except ValueError as exc:
                raise SettingsError(str(exc).split(":", 1)[0] + ": " + str(exc).split(":", 1)[-1].strip()) from None

    public_url = env.get("GATEWAY_PUBLIC_URL") or base.public_url
    parsed = urlparse(public_url)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise SettingsError(f"GATEWAY_PUBLIC_URL: {public_url!r} is not an http(s) URL")

    prefix = env.get("GATEWAY_REDIS_PREFIX", base.redis_prefix)
    if not re.fullmatch(r"[A-Za-z0-9_:{}.-]{1,64}", prefix):
        raise SettingsError(f"GATEWAY_REDIS_PREFIX: {prefix!r} has characters other than letters, digits and _:{{}}.-")

    log_level = env.get("GATEWAY_LOG_LEVEL", base.log_level).upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"GATEWAY_LOG_LEVEL: {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")

    fsync = env.get("GATEWAY_EMBEDDED_REDIS_FSYNC") or base.embedded_redis_fsync
    if fsync not in {"always", "everysec"}:
        raise SettingsError(f"GATEWAY_EMBEDDED_REDIS_FSYNC: {fsync!r} is not 'always' or 'everysec'")

    categoriser = (env.get("GATEWAY_CATEGORISER") or base.categoriser).strip().lower()
    if categoriser not in CATEGORISERS:
        raise SettingsError(f"GATEWAY_CATEGORISER: {categoriser!r} is not one of {', '.join(CATEGORISERS)}")
    var_dir = Path(env.get("GATEWAY_VAR_DIR") or base.var_dir)
    models_dir = Path(env.get("GATEWAY_MODELS_DIR") or var_dir / "models")

    return Settings(
        redis_url=redis_url,
        redis_prefix=prefix,
        plugins_path=Path(env.get("GATEWAY_PLUGINS") or base.plugins_path),
        plugins_autoload=_bool(env, "GATEWAY_PLUGINS_AUTOLOAD", base.plugins_autoload),
        public_url=public_url.rstrip("/"),
        app_keys=_parse_credentials("GATEWAY_APP_KEYS", env.get("GATEWAY_APP_KEYS", ""), "app"),
        agent_tokens=_parse_credentials("GATEWAY_AGENT_TOKENS", env.get("GATEWAY_AGENT_TOKENS", ""), "agent"),
        supervisor_tokens=_parse_credentials(
            "GATEWAY_SUPERVISOR_TOKENS", env.get("GATEWAY_SUPERVISOR_TOKENS", ""), "supervisor"
        ),
        var_dir=var_dir,
        models_dir=models_dir,
        categoriser=categoriser,
        worker_nice=_worker_nice(env, base.worker_nice),
        worker_idle=_worker_idle(env),
        log_level=log_level,
        worker_wake=_bool(env, "GATEWAY_WORKER_WAKE", base.worker_wake),
        embedded_redis_fsync=fsync,
        pii_roles=_roles(env.get("GATEWAY_PII_ROLES"), base.pii_roles),
        test_clock=_bool(env, "GATEWAY_TEST_CLOCK", base.test_clock),
        **_numbers(env, base),
    )


def _roles(raw: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if raw is None:
        return default
    roles = tuple(r.strip() for r in raw.split(",") if r.strip())
    unknown = set(roles) - {"supervisor", "agent", "app"}
    if unknown:
        raise SettingsError(f"GATEWAY_PII_ROLES: unknown role(s) {sorted(unknown)} (supervisor, agent, app)")
    return roles
