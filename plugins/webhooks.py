"""What every webhook channel needs: a bounded raw body, constant-time secret checks, a
freshness window for signed timestamps, quarantine of signed-but-unparseable payloads, the
"last time the customer wrote" clock behind the providers' reply windows, and one way to turn
a provider's HTTP answer into a ``DeliveryResult``.

Internal: a plugin imports these from ``plugins.kit``, the stable surface."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ssl
import time
from typing import Any

import httpx
from litestar import Request

from plugins.problems import ProblemError
from normalizer.schema import DeliveryResult
from plugins.contract import GatewayServices


@functools.lru_cache(maxsize=None)
def tls() -> ssl.SSLContext:
    """One TLS context per process, for every provider call (``httpx.AsyncClient(verify=tls())``).
    Building one loads the CA bundle: about 30 ms of CPU, which a client per send paid every
    time — most of a worker's time per message (bench/RESULTS.md, load)."""
    return httpx.create_ssl_context()

LAST_INBOUND_TTL_S = 8 * 86_400


async def bounded_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The raw body, refused with 413 when it is (or says it is) over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    body = await request.body()
    if len(body) > limit:
        raise ProblemError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    return body


def same_secret(given: str | bytes | None, expected: str | bytes) -> bool:
    if given is None or not expected:
        return False
    a = given.encode() if isinstance(given, str) else given
    b = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


def require_configured(value: str, what: str) -> None:
    if not value:
        raise ProblemError(503, "channel_not_configured", f"This channel is not configured ({what}).")


def check_fresh(timestamp: str | None, window_s: int, *, now: float | None = None) -> None:
    """A signed timestamp must be within ``window_s`` of our clock (either way): an old signed
    request replayed later is refused even though its signature is genuine."""
    try:
        ts = int(timestamp or "")
    except ValueError:
        raise ProblemError(403, "timestamp_invalid", "The signed timestamp is missing or not a number.") from None
    if abs((now or time.time()) - ts) > window_s:
        raise ProblemError(403, "timestamp_stale", f"The signed timestamp is more than {window_s} s away from now.")


def payload_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:32]


async def quarantine_once(services: GatewayServices, channel: str, reason: str, raw: bytes,
                          identity: str | None = None) -> str:
    """Keep an input we cannot take (its raw bytes, for a person to look at), once however often
    the provider retries it or a poller reads it again. ``identity`` says what counts as the same
    input (default: the bytes themselves)."""
    store = services.store
    marker = store.keys.quarantined_once(channel, identity or payload_digest(raw))
    if await store.r.set(marker, "1", nx=True, ex=30 * 86_400):
        qid = await store.quarantine(channel=channel, reason=reason[:300], raw=raw)
        services.logger.warning("%s input quarantined as %s: %s", channel, qid, reason[:120])
        return qid
    return ""


def raise_if_transient(response: httpx.Response, provider: str) -> None:
    """A 5xx or 429 from a provider raises (the worker retries the job later)."""
    if response.status_code >= 500 or response.status_code == 429:
        raise RuntimeError(f"{provider} answered {response.status_code}")


async def note_inbound(services: GatewayServices, channel: str, contact_value: str, at_ms: int) -> None:
    """Remember when the customer last wrote (the providers' customer-service windows run from it)."""
    redis = services.require_redis()
    key = services.store.keys.last_inbound(channel, contact_value)
    current = await redis.get(key)
    if current is None or int(current) < at_ms:
        await redis.set(key, at_ms, ex=LAST_INBOUND_TTL_S)


async def last_inbound_ms(services: GatewayServices, channel: str, contact_value: str) -> int | None:
    value = await services.require_redis().get(services.store.keys.last_inbound(channel, contact_value))
    return int(value) if value else None


def http_failure(response: httpx.Response | None, exc: Exception | None = None, *,
                 retryable_codes: frozenset[int] = frozenset()) -> DeliveryResult:
    """A failed provider call as a ``DeliveryResult``: network errors, 5xx and 429 (or a
    provider's own rate-limit code) are worth retrying; other 4xx are not."""
    if response is None:
        return DeliveryResult(status="failed", error=f"{type(exc).__name__}: {exc}"[:300], retryable=True)
    detail = response.text[:200]
    code = provider_error_code(response)
    retryable = response.status_code >= 500 or response.status_code == 429 or code in retryable_codes
    return DeliveryResult(status="failed", error=f"HTTP {response.status_code}: {detail}", retryable=retryable)


def provider_error_code(response: httpx.Response) -> int | None:
    """The numeric error code in a Graph (``error.code``), Telegram (``error_code``) or WeChat
    (``errcode``) error body."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    for value in ((error or {}).get("code") if isinstance(error, dict) else None, body.get("error_code"),
                  body.get("errcode")):
        if isinstance(value, int):
            return value
    return None
