"""Gateway settings, read once from the environment (12-factor).

Each field names the environment variable it comes from. A bad value stops start-up with a
`SettingsError` that names the variable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Mapping
from urllib.parse import urlparse

import msgspec

if TYPE_CHECKING:
    from gateway.store import IntakeLimits


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Credential(msgspec.Struct, frozen=True):
    """One bearer credential and the principal it stands for."""

    principal: str
    token: str


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    def intake_limits(self) -> "IntakeLimits":
        from gateway.store import IntakeLimits

        return IntakeLimits(self.max_pending, self.contact_rate_per_minute, self.channel_rate_per_second,
                            self.redis_wait_replicas, self.redis_wait_ms)

    #: REDIS_URL: the Redis to use; None means the embedded one under `var_dir`.
    redis_url: str | None = None
    #: GATEWAY_REDIS_PREFIX: prefix of every key this gateway writes (lets deployments share a Redis).
    redis_prefix: str = "cg:"
    #: GATEWAY_PLUGINS: path of the plugins.toml to load.
    plugins_path: Path = Path("plugins.toml")
    #: GATEWAY_PLUGINS_AUTOLOAD: load installed packages' entry-point plugins (0 switches it off).
    plugins_autoload: bool = True
    #: GATEWAY_PUBLIC_URL: the public base URL providers call (what Twilio signs).
    public_url: str = "http://127.0.0.1:8000"
    #: GATEWAY_APP_KEYS: the payment app's API keys (comma-separated, optionally `name:key`).
    app_keys: tuple[Credential, ...] = ()
    #: GATEWAY_AGENT_TOKENS: agents' tokens (comma-separated, optionally `agent_id:token`).
    agent_tokens: tuple[Credential, ...] = ()
    #: GATEWAY_SUPERVISOR_TOKENS: supervisors' tokens (comma-separated, optionally `id:token`).
    supervisor_tokens: tuple[Credential, ...] = ()
    #: GATEWAY_VAR_DIR: where the embedded Redis, evidence blobs and logs live.
    var_dir: Path = Path("var")
    #: GATEWAY_MAX_TEXT_CHARS: longest message text accepted.
    max_text_chars: int = 8000
    #: GATEWAY_MAX_BODY_BYTES: largest request body accepted on any route.
    max_body_bytes: int = 16 * 1024 * 1024
    #: GATEWAY_MAX_EVIDENCE_BYTES: largest single attachment.
    max_evidence_bytes: int = 10 * 1024 * 1024
    #: GATEWAY_CLAIM_LEASE_SECONDS: how long a claimed complaint stays with an agent without an answer.
    claim_lease_seconds: int = 300
    #: GATEWAY_WORKER_MAX_JOBS: concurrent jobs per worker process.
    worker_max_jobs: int = 50
    #: GATEWAY_JOB_TIMEOUT_SECONDS: a job running longer is cancelled and retried.
    job_timeout_seconds: int = 20
    #: GATEWAY_EVIDENCE_FETCH_TRIES / _BACKOFF_SECONDS / _TIMEOUT_SECONDS: an attachment a channel
    #: only announced is fetched by a job of its own: this many tries, the first retry after the
    #: backoff, doubling (capped at 300 s), each try bounded as a whole; then it is marked failed.
    evidence_fetch_tries: int = 10
    evidence_fetch_backoff_seconds: float = 1.0
    evidence_fetch_timeout_seconds: float = 30.0
    #: GATEWAY_REPEAT_WINDOW_HOURS: how far back a same-amount or near-identical report by the
    #: same customer counts as a repeat of an open case (same transaction id: any age).
    repeat_window_hours: int = 72
    #: GATEWAY_INCIDENT_WINDOW_MINUTES / GATEWAY_INCIDENT_MIN_CUSTOMERS: this many different
    #: customers reporting the same fault within the window form an incident.
    incident_window_minutes: int = 10
    incident_min_customers: int = 10
    #: GATEWAY_PII_ROLES: roles that see full card / ID / phone numbers and e-mail addresses in a
    #: case's messages (everyone else, every list view and every plugin that does not declare
    #: ``needs_personal_data`` sees them masked).
    pii_roles: tuple[str, ...] = ("supervisor", "agent")
    #: GATEWAY_REOPEN_WINDOW_HOURS: a customer's reply this long after resolution reopens the case
    #: (a survey score is recorded instead).
    reopen_window_hours: int = 72
    #: GATEWAY_TEST_CLOCK=1: the deadline clock is real time plus an offset in Redis that tests
    #: and benchmarks move (never in production).
    test_clock: bool = False
    #: GATEWAY_MAX_PENDING: refuse new messages (503 + Retry-After) while this many wait for a worker
    #: (0 = never).
    max_pending: int = 100_000
    #: GATEWAY_REDIS_WAIT_REPLICAS: acknowledge a message to its channel only once this many Redis
    #: replicas hold it (Redis WAIT; 0 = the master's own AOF is enough). With Sentinel or
    #: Cluster, 1 keeps every acknowledged message through a failover (README "Scaling out").
    redis_wait_replicas: int = 0
    #: GATEWAY_REDIS_WAIT_MS: how long intake waits for those replicas before answering 503.
    redis_wait_ms: int = 500
    #: GATEWAY_CONTACT_RATE_PER_MINUTE: messages one sender may send per minute (429 beyond; 0 = no
    #: limit). E-mail, a pull channel, is not limited here (it has its own acknowledgement limit).
    contact_rate_per_minute: int = 30
    #: GATEWAY_CHANNEL_RATE_PER_SECOND: messages one channel may bring per second (0 = no limit).
    channel_rate_per_second: int = 2000
    #: GATEWAY_LOG_LEVEL: DEBUG, INFO, WARNING, ERROR.
    log_level: str = "INFO"
    #: GATEWAY_WORKER_WAKE: let the gateway wake workers at once instead of waiting for the next poll.
    worker_wake: bool = True
    #: GATEWAY_WORKER_POLL_SECONDS: the poll interval when no wake-up arrives.
    worker_poll_seconds: float = 0.5
    #: GATEWAY_EMBEDDED_REDIS_FSYNC: the embedded Redis's appendfsync: ``always`` (an acknowledged
    #: message survives a power cut) or ``everysec`` (smoother latency; a power cut may lose ~1 s).
    embedded_redis_fsync: str = "always"

    @property
    def evidence_dir(self) -> Path:
        return self.var_dir / "evidence"


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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment; raise `SettingsError` naming the first bad variable."""
    env = os.environ if env is None else env

    redis_url = env.get("REDIS_URL") or None
    if redis_url is not None:
        scheme = urlparse(redis_url).scheme
        if scheme not in {"redis", "rediss", "unix", "redis+sentinel"}:
            raise SettingsError("REDIS_URL: scheme must be redis://, rediss://, unix:// or redis+sentinel://, "
                                f"got {redis_url.split(':')[0]!r}")
        if scheme == "redis+sentinel":
            from gateway.redis_pool import parse_sentinel_url

            try:
                parse_sentinel_url(redis_url)
            except ValueError as exc:
                raise SettingsError(str(exc).split(":", 1)[0] + ": " + str(exc).split(":", 1)[-1].strip()) from None

    public_url = env.get("GATEWAY_PUBLIC_URL") or "http://127.0.0.1:8000"
    parsed = urlparse(public_url)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise SettingsError(f"GATEWAY_PUBLIC_URL: {public_url!r} is not an http(s) URL")

    prefix = env.get("GATEWAY_REDIS_PREFIX", "cg:")
    if not re.fullmatch(r"[A-Za-z0-9_:{}.-]{1,64}", prefix):
        raise SettingsError(f"GATEWAY_REDIS_PREFIX: {prefix!r} has characters other than letters, digits and _:{{}}.-")

    log_level = env.get("GATEWAY_LOG_LEVEL", "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"GATEWAY_LOG_LEVEL: {log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")

    poll_raw = env.get("GATEWAY_WORKER_POLL_SECONDS") or "0.5"
    try:
        poll = float(poll_raw)
    except ValueError:
        raise SettingsError(f"GATEWAY_WORKER_POLL_SECONDS: {poll_raw!r} is not a number") from None
    if not 0.001 <= poll <= 10:
        raise SettingsError(f"GATEWAY_WORKER_POLL_SECONDS: {poll} is outside 0.001..10")

    fsync = env.get("GATEWAY_EMBEDDED_REDIS_FSYNC") or "always"
    if fsync not in {"always", "everysec"}:
        raise SettingsError(f"GATEWAY_EMBEDDED_REDIS_FSYNC: {fsync!r} is not 'always' or 'everysec'")

    return Settings(
        redis_url=redis_url,
        redis_prefix=prefix,
        plugins_path=Path(env.get("GATEWAY_PLUGINS") or "plugins.toml"),
        plugins_autoload=_bool(env, "GATEWAY_PLUGINS_AUTOLOAD", True),
        public_url=public_url.rstrip("/"),
        app_keys=_parse_credentials("GATEWAY_APP_KEYS", env.get("GATEWAY_APP_KEYS", ""), "app"),
        agent_tokens=_parse_credentials("GATEWAY_AGENT_TOKENS", env.get("GATEWAY_AGENT_TOKENS", ""), "agent"),
        supervisor_tokens=_parse_credentials(
            "GATEWAY_SUPERVISOR_TOKENS", env.get("GATEWAY_SUPERVISOR_TOKENS", ""), "supervisor"
        ),
        var_dir=Path(env.get("GATEWAY_VAR_DIR") or "var"),
        max_text_chars=_int(env, "GATEWAY_MAX_TEXT_CHARS", 8000, 1, 100_000),
        max_body_bytes=_int(env, "GATEWAY_MAX_BODY_BYTES", 16 * 1024 * 1024, 1024, 256 * 1024 * 1024),
        max_evidence_bytes=_int(env, "GATEWAY_MAX_EVIDENCE_BYTES", 10 * 1024 * 1024, 1024, 200 * 1024 * 1024),
        claim_lease_seconds=_int(env, "GATEWAY_CLAIM_LEASE_SECONDS", 300, 1, 86_400),
        worker_max_jobs=_int(env, "GATEWAY_WORKER_MAX_JOBS", 50, 1, 10_000),
        job_timeout_seconds=_int(env, "GATEWAY_JOB_TIMEOUT_SECONDS", 20, 1, 3600),
        log_level=log_level,
        worker_wake=_bool(env, "GATEWAY_WORKER_WAKE", True),
        worker_poll_seconds=poll,
        embedded_redis_fsync=fsync,
        repeat_window_hours=_int(env, "GATEWAY_REPEAT_WINDOW_HOURS", 72, 0, 24 * 90),
        incident_window_minutes=_int(env, "GATEWAY_INCIDENT_WINDOW_MINUTES", 10, 1, 24 * 60),
        incident_min_customers=_int(env, "GATEWAY_INCIDENT_MIN_CUSTOMERS", 10, 2, 100_000),
        pii_roles=_roles(env.get("GATEWAY_PII_ROLES")),
        reopen_window_hours=_int(env, "GATEWAY_REOPEN_WINDOW_HOURS", 72, 0, 24 * 365),
        test_clock=_bool(env, "GATEWAY_TEST_CLOCK", False),
        max_pending=_int(env, "GATEWAY_MAX_PENDING", 100_000, 0, 100_000_000),
        redis_wait_replicas=_int(env, "GATEWAY_REDIS_WAIT_REPLICAS", 0, 0, 16),
        redis_wait_ms=_int(env, "GATEWAY_REDIS_WAIT_MS", 500, 1, 60_000),
        contact_rate_per_minute=_int(env, "GATEWAY_CONTACT_RATE_PER_MINUTE", 30, 0, 1_000_000),
        channel_rate_per_second=_int(env, "GATEWAY_CHANNEL_RATE_PER_SECOND", 2000, 0, 10_000_000),
        evidence_fetch_tries=_int(env, "GATEWAY_EVIDENCE_FETCH_TRIES", 10, 1, 100),
        evidence_fetch_backoff_seconds=_float(env, "GATEWAY_EVIDENCE_FETCH_BACKOFF_SECONDS", 1.0, 0.01, 3600.0),
        evidence_fetch_timeout_seconds=_float(env, "GATEWAY_EVIDENCE_FETCH_TIMEOUT_SECONDS", 30.0, 0.1, 3600.0),
    )


def _roles(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ("supervisor", "agent")
    roles = tuple(r.strip() for r in raw.split(",") if r.strip())
    unknown = set(roles) - {"supervisor", "agent", "app"}
    if unknown:
        raise SettingsError(f"GATEWAY_PII_ROLES: unknown role(s) {sorted(unknown)} (supervisor, agent, app)")
    return roles
