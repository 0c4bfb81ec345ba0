"""The one door every channel's messages go through before they are acknowledged."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from router import metrics
from router.metrics import INTAKE_SECONDS
from plugins.problems import ProblemError
from router.store import ComplaintStore
from plugins.contract import IntakeOutcome
from normalizer.schema import InboundMessage

log = logging.getLogger("gateway.intake")


@dataclass
class IntakeCounters:
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    failures: int = 0


class Intake:
    """Adapters call ``submit`` after verifying and parsing; when it returns, the message and
    its processing job are durable and the channel may be answered."""

    def __init__(self, store: ComplaintStore) -> None:
        self.store = store
        self.counters = IntakeCounters()

    async def answer_retry(self, channel: str, outcome: str) -> None:
        """Count a retry a channel answered from the idempotency record, without storing again.
        With ``GATEWAY_REDIS_WAIT_REPLICAS`` the count waits for the replicas: once they have it
        they have the message it answers for too.

        :raises ProblemError: 503 + Retry-After when the replicas did not confirm in time.
        """
        confirmed = await self.store.count_replicated(
            metrics.counter_field("gateway_messages_in", channel=channel, outcome=outcome))
        if outcome == "duplicate" and not confirmed:
            raise _not_replicated()

    async def submit(
        self,
        message: InboundMessage,
        *,
        idempotency_scope: str | None = None,
        request_hash: str = "",
        raw: bytes | None = None,
        limits: bool = True,
    ) -> IntakeOutcome:
        """Store ``message`` durably and queue its processing.

        :param idempotency_scope: what makes a retry the same message (provider message id, or
            the app's user id + client_message_id); ``None`` for no deduplication.
        :param request_hash: with a scope, a hash of the request: a retry with the same scope and
            a different hash is a conflict. Empty: any retry with the same scope is a duplicate.
        :param raw: the provider's raw payload, kept for audit and quarantine replays.
        :param limits: apply the per-sender / per-channel rate limits (a pull channel such as
            e-mail passes False: it must never stall on one sender).
        :raises ProblemError: 503 + Retry-After when the workers are too far behind, or when
            ``GATEWAY_REDIS_WAIT_REPLICAS`` replicas did not confirm the write in time; 429 +
            Retry-After when a sender or channel is over its budget (nothing is stored).
        """
        started = time.perf_counter()
        try:
            outcome = await self.store.intake(
                message, idempotency_scope=idempotency_scope, request_hash=request_hash, raw=raw, limits=limits
            )
        except Exception:
            self.counters.failures += 1
            raise
        if outcome.status == "backpressure":
            raise ProblemError(503, "overloaded", "The desk is behind on processing; try again shortly.",
                               headers={"Retry-After": "5"})
        if outcome.status == "rate_limited":
            who = "this sender" if outcome.message_id == "contact" else f"the {message.channel} channel"
            raise ProblemError(429, "rate_limited", f"Too many messages from {who}; try again later.",
                               headers={"Retry-After": "60" if outcome.message_id == "contact" else "1"})
        wanted = self.store.limits.wait_replicas
        if wanted and outcome.status in ("accepted", "duplicate") and (outcome.replicas or 0) < wanted:
            # stored on the master but not yet on enough replicas: not acknowledged, so the
            # channel retries (the retry is a duplicate, answered once the copies exist)
            self.counters.failures += 1
            raise _not_replicated()
        if outcome.status == "accepted":
            self.counters.accepted += 1
        elif outcome.status == "duplicate":
            self.counters.duplicates += 1
        else:
            self.counters.conflicts += 1
        elapsed = time.perf_counter() - started
        INTAKE_SECONDS.labels(message.channel).observe(elapsed)
        log.debug("intake %s %s %s in %.2f ms", message.channel, outcome.status, outcome.message_id, elapsed * 1000)
        return outcome


def _not_replicated() -> ProblemError:
    return ProblemError(503, "not_replicated", "Stored, but not yet copied to a standby; retry shortly.",
                        headers={"Retry-After": "1"})
