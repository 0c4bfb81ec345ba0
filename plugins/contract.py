"""The types that hooks exchange with the gateway (see ``hookspecs.py`` for the hooks).

Internal: a plugin imports what it needs of this module from ``plugins.kit`` (the one stable
module); the layout here may change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from normalizer.evidence import BlobStore
    from normalizer.schema import Complaint, Contact, DeliveryResult, InboundMessage, OutboundMessage
    from plugins.settings import Settings


@dataclass
class IntakeOutcome:
    """What ``services.intake.submit`` answers: the message is durable when ``status`` is
    ``accepted`` or ``duplicate`` (then acknowledge the channel)."""

    status: str  # "accepted", "duplicate", "conflict", "backpressure", "rate_limited"
    message_id: str
    replicas: int | None = None  # how many replicas confirmed the write (when asked to wait)


class Sender(Protocol):
    """Delivers one outbound message on a channel."""

    async def send(self, message: OutboundMessage) -> DeliveryResult: ...


@dataclass(frozen=True)
class RouteMount:
    """HTTP handlers a plugin contributes (Litestar route handlers, controllers or routers).

    ``prefix`` ``None`` mounts them under ``/webhooks/<plugin name>``; a channel that owns a
    public API path (the payment app's ``/v1/messages``) names its prefix.
    """

    handlers: Sequence[Any]
    prefix: str | None = None
    #: The same routes answered without the framework for plain requests (``plugins.direct``):
    #: ``"POST /v1/messages"`` -> ``async def handler(DirectRequest) -> DirectResponse``. Full
    #: paths, and only beside a handler of the same method and path.
    direct: Mapping[str, Callable[[Any], Awaitable[Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Poller:
    """A long-running task the worker runs for a plugin (e.g. one IMAP mailbox)."""

    name: str
    run: Callable[["GatewayServices"], Awaitable[None]]


class IntakePort(Protocol):
    """The one door every channel's messages go through (``services.intake``)."""

    async def submit(self, message: InboundMessage, *, idempotency_scope: str | None = None,
                     request_hash: str = "", raw: bytes | None = None, limits: bool = True) -> IntakeOutcome:
        """Store ``message`` durably and queue its processing; when it returns ``accepted`` or
        ``duplicate``, answer the channel."""
        ...

    async def answer_retry(self, channel: str, outcome: str) -> None:
        """Count a retry answered from the idempotency record, without storing again."""
        ...


class StorePort(Protocol):
    """What a channel may ask of the gateway's store (``services.store``); the rest is internal.

    ``keys`` names every key (router/store/keys.py's ``Keys``); a plugin's own keys are
    ``keys.plugin(name, *parts)``, ``<prefix><name>:<part>:...`` (``keys.plugin("sms", "optout",
    number)``), so they share the desk's prefix and Redis Cluster slot and never meet another
    plugin's. ``r`` is the Redis client for a plugin's own keys."""

    keys: Any
    r: Any

    async def quarantine(self, *, channel: str, reason: str, raw: bytes, message_id: str | None = None) -> str: ...
    async def idempotent_message(self, channel: str, scope: str) -> str | None: ...
    async def message_state(self, mid: str) -> dict[str, str] | None: ...
    async def get(self, cid: str) -> Complaint: ...
    async def case_for_contact(self, case_number: str, contact: Contact) -> Complaint | None: ...
    async def remember_outbound(self, channel: str, provider_id: str, complaint_id: str, reply_id: str,
                                **kwargs: Any) -> None: ...
    async def apply_provider_status(self, channel: str, provider_id: str, status: str, **kwargs: Any) -> Any: ...
    async def apply_read_watermark(self, channel: str, contact_value: str, watermark_ms: int) -> int: ...


@dataclass
class GatewayServices:
    """What the gateway shares with plugins. ``redis`` is set once the process has connected."""

    settings: Settings
    intake: IntakePort
    store: StorePort
    blobs: BlobStore
    redis: Redis | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("gateway.plugins"))

    def require_redis(self) -> Redis:
        if self.redis is None:
            raise RuntimeError("Redis is not connected yet (use services.redis inside handlers, not at import)")
        return self.redis
