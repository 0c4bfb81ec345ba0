"""The plugin kit: everything a channel plugin may use, in one module. It is the stable surface
(names here keep their meaning across releases; a change is announced); every other module of
the gateway is internal and may change without notice. The built-in channels import from here
too. docs/plugins.md explains how the pieces fit together.

Hooks and what they exchange
    ``hookimpl`` (mark a method as a hook implementation; the hooks are in ``plugins.hookspecs``),
    ``GatewayServices`` (what a hook gets: ``settings``, ``intake``, ``store``, ``blobs``,
    ``redis``, ``logger``), ``RouteMount``, ``Poller``, ``Sender``, ``IntakePort``,
    ``StorePort``. ``DirectRequest`` / ``DirectResponse``: a hot route's handler without the
    web framework, beside its ordinary one (``RouteMount.direct``; ``plugins.direct`` says when
    the gateway uses it).

Taking a message in
    ``build_message(*, message_id, channel, sender, text, provider_message_id=None,
    received_at=None, language=None, amount=None, transaction=None, category_hint=None,
    attachments=(), verified_contacts=(), complaint_ref=None, recorded_by=None, raw_ref=None,
    metadata=None, subject=None, suppress_acknowledgement=None)`` normalises the contact and
    finds amounts, transaction ids and the language; ``new_id("msg")`` gives its id;
    ``clean_text`` bounds and cleans a text (raises ``InputRejected``).

    ``await services.intake.submit(message, *, idempotency_scope=None, request_hash="",
    raw=None, limits=True) -> IntakeOutcome``: when it returns, the message and its job are
    durable; answer the provider only then. ``idempotency_scope``: the provider's message id (a
    retry is then a ``duplicate``, not a second message); ``request_hash``: with a scope, a
    retry whose hash differs is a ``conflict``; ``raw``: the provider's bytes, kept for audit;
    ``limits=False`` for a pull channel (e-mail) that must not stall on one sender. It raises
    ``ProblemError`` 503 (the desk is behind, or replicas did not confirm) or 429 (a sender or
    the channel is over its budget): let it propagate, so the provider retries the whole request.
    ``IntakeOutcome.status`` is ``accepted``, ``duplicate`` or ``conflict``.

    ``Contact(kind, value, display_name=None)``: who wrote. ``CONTACT_KINDS`` lists the kinds the
    gateway knows (``phone`` and ``email`` are normalised and link a customer across channels);
    a channel with ids of its own uses its own kind (``line_user``, ``partner_user``).

Webhook safety
    ``bounded_body(request, limit)`` (413 over ``limit``), ``same_secret(given, expected)``
    (constant-time), ``check_fresh(timestamp, window_s)`` (403 for a stale signed timestamp),
    ``require_configured(value, what)`` (503 while a secret is unset), ``ProblemError(status,
    code, detail)`` (a problem-details answer), ``REFUSED`` (the status of a request whose
    signature is missing or wrong: 403), ``quarantine_once(services, channel, reason, raw)``
    (a signed body that cannot be parsed is kept for a person, once, and the provider answered).

Sending
    ``OutboundMessage`` in, ``DeliveryResult`` out; ``http_failure(response, exc)`` turns a
    provider's failure into a retryable (network, 5xx, 429) or final (other 4xx) result;
    ``tls()`` is the one TLS context every provider call shares
    (``httpx.AsyncClient(verify=tls())``); ``note_inbound`` / ``last_inbound_ms`` keep when the
    customer last wrote (for providers' reply windows).
"""

from __future__ import annotations

from normalizer.ids import new_id
from normalizer.inbound import InputRejected, build_message, clean_text
from normalizer.schema import Contact, DeliveryResult, EvidenceLink, InboundMessage, OutboundMessage
from plugins.direct import DirectRequest, DirectResponse
from plugins.contract import GatewayServices, IntakeOutcome, IntakePort, Poller, RouteMount, Sender, StorePort
from plugins.hookspecs import hookimpl
from plugins.problems import ProblemError
from plugins.webhooks import (
    bounded_body,
    check_fresh,
    http_failure,
    last_inbound_ms,
    note_inbound,
    quarantine_once,
    raise_if_transient,
    require_configured,
    same_secret,
    tls,
)

#: The status of a request whose signature (or secret) is missing or wrong, on every channel.
REFUSED = 403

#: The contact kinds the gateway knows; a channel with ids of its own names its own kind.
CONTACT_KINDS = ("phone", "email", "app_user", "wa_id", "psid", "igsid", "telegram", "wechat_openid")

__all__ = [
    "CONTACT_KINDS", "REFUSED", "Contact", "DeliveryResult", "DirectRequest", "DirectResponse", "EvidenceLink",
    "GatewayServices", "InboundMessage", "InputRejected", "IntakeOutcome", "IntakePort", "OutboundMessage",
    "Poller", "ProblemError", "RouteMount", "Sender", "StorePort", "bounded_body", "build_message", "check_fresh",
    "clean_text", "hookimpl", "http_failure", "last_inbound_ms", "new_id", "note_inbound", "quarantine_once",
    "raise_if_transient", "require_configured", "same_secret", "tls",
]
