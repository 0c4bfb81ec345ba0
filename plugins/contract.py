"""The types that hooks exchange with the gateway (see ``hookspecs.py`` for the hooks)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.intake import Intake
    from gateway.settings import Settings
    from gateway.store import ComplaintStore
    from normalizer.evidence import BlobStore
    from normalizer.schema import DeliveryResult, OutboundMessage


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


@dataclass(frozen=True)
class Poller:
    """A long-running task the worker runs for a plugin (e.g. one IMAP mailbox)."""

    name: str
    run: Callable[["GatewayServices"], Awaitable[None]]


@dataclass
class GatewayServices:
    """What the gateway shares with plugins. ``redis`` is set once the process has connected."""

    settings: Settings
    intake: Intake
    store: ComplaintStore
    blobs: BlobStore
    redis: Redis | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("gateway.plugins"))

    def require_redis(self) -> Redis:
        if self.redis is None:
            raise RuntimeError("Redis is not connected yet (use services.redis inside handlers, not at import)")
        return self.redis
