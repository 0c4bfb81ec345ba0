"""The deployment's settings as every layer reads them (the gateway loads them from the
environment: ``gateway/settings.py``; plugins get them as ``services.settings``).

Each field names the environment variable it comes from.

Internal: a plugin imports what it needs of this module from ``plugins.kit`` (the one stable
module); the layout here may change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec



@dataclass
class IntakeLimits:
    """What intake refuses beyond (the deployment's settings; 0 = no limit)."""

    max_pending: int = 0  # 0 = no limit
    contact_per_minute: int = 0
    channel_per_second: int = 0
    wait_replicas: int = 0  # acknowledge only once this many replicas have the message (WAIT)
    wait_ms: int = 500


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Credential(msgspec.Struct, frozen=True):
    """One bearer credential and the principal it stands for."""

    principal: str
    token: str


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    def intake_limits(self) -> IntakeLimits:
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
    #: GATEWAY_WORKER_NICE: the worker process's niceness at least (0-19; 0 = as started): on a
    #: host it shares with a gateway, a burst's intake gets the CPU first and the worker catches
    #: up after (deadlines are minutes, an acknowledgement is waited for in milliseconds).
    worker_nice: int = 0
    #: GATEWAY_WORKER_NICE=idle: the worker under Linux's ``SCHED_IDLE`` (and niceness 19 where
    #: that is refused): it runs only on a CPU that nothing else on the host wants. Opt-in: the
    #: intake gains in a burst, routing loses whenever anything else wants the CPU (bench/RESULTS.md).
    worker_idle: bool = False
    #: GATEWAY_WORKER_SURGE_SHARE / GATEWAY_WORKER_SURGE_LAG_SECONDS: while the worker is more than
    #: the lag behind, a gateway is busy and the worker has to wait for a CPU, it keeps to this share
    #: of a core, so that a gateway on the same host acknowledges a burst at speed; at full speed
    #: again as soon as one of those ends (``router.pacing``). A share of 1: never.
    worker_surge_share: float = 0.2
    worker_surge_lag_seconds: float = 0.5
    #: GATEWAY_WORKER_SURGE_MOST_BEHIND_SECONDS: no rest once the worker is this far behind (the
    #: customers' first responses wait on it); 0: no such bound.
    worker_surge_most_behind_seconds: float = 0.0
    #: GATEWAY_WORKER_CLAIM_GAP_MS: the least time between two claims that took jobs: what is queued
    #: meanwhile is claimed together and goes through each step in one Redis call (``router.arq_worker``);
    #: 0: claim as soon as woken.
    worker_claim_gap_ms: int = 20
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
    #: GATEWAY_MODELS_DIR: where the categoriser's trained versions are kept on this machine
    #: (``None``: ``<var_dir>/models``; see ``models_path``).
    models_dir: Path | None = None
    #: GATEWAY_CATEGORISER: ``model`` (the learned categoriser, the default) or ``keywords`` (the
    #: keyword rules of router/categorise.py). A category hint and a classifier plugin override either.
    categoriser: str = "model"

    @property
    def models_path(self) -> Path:
        """The categoriser's models directory: ``models_dir``, else ``<var_dir>/models``."""
        return self.models_dir if self.models_dir is not None else self.var_dir / "models"

    @property
    def evidence_dir(self) -> Path:
        return self.var_dir / "evidence"
