"""What the routing rules look at: the facts of a new message, or of a case as it stands (when a
repeat report re-routes it, and for a dry run of candidate rules)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from normalizer.schema import Amount, Complaint, InboundMessage
from router.deadlines import DeadlinePolicy
from router.rules import Facts


def _decimal(amount: Amount | None) -> Decimal | None:
    if amount is None:
        return None
    try:
        return Decimal(amount.value)
    except InvalidOperation:
        return None


def facts_of(message: InboundMessage, category: str, formal: bool, policy: DeadlinePolicy) -> Facts:
    """What the rules look at for a new message."""
    return Facts(category=category, formal=formal, channel=message.channel, language=message.language,
                 text=message.text, amount=_decimal(message.amount),
                 currency=message.amount.currency if message.amount else None,
                 tier=message.metadata.get("tier") or None,
                 in_business_hours=policy.in_business_hours(message.received_at))


def facts_of_complaint(c: Complaint, policy: DeadlinePolicy) -> Facts:
    """What the rules look at for a case as it stands (re-routing, dry runs)."""
    return Facts(category=c.category, formal=c.formal_complaint, channel=c.channel, language=c.language,
                 text=c.messages[0].text if c.messages else "", amount=_decimal(c.amount),
                 currency=c.amount.currency if c.amount else None, tier=c.customer_tier,
                 repeat_count=c.repeat_count, in_business_hours=policy.in_business_hours(c.created_at),
                 confidence=c.category_confidence)


__all__ = ["facts_of", "facts_of_complaint"]
