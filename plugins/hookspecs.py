"""Every hook a plugin can implement, in one place.

A plugin is an object (usually an instance of a class with a ``Settings`` struct) whose methods
are marked with ``@hookimpl``. The gateway calls hooks through the typed wrapper in
``plugins.manager.GatewayPlugins``; each plugin's implementation is called on its own, so a plugin
that raises is logged and counted, and the others still run.

Sync or async: ``classify_message``, ``enrich_complaint``, ``complaint_event``,
``complaint_events`` and ``fetch_evidence`` may be plain functions or ``async def`` (the wrapper awaits them).
``gateway_routes``, ``gateway_pollers`` and ``channel_sender`` must be plain functions: the
gateway needs their answer at once (while the app is built, while a worker starts, each time a
reply goes out), so an ``async def`` implementation is refused when the plugin is loaded, with
an error naming the plugin and the hook. What they return does its waiting itself: a sender's
``send``, a poller's ``run`` and the route handlers are ``async``.

Personal data: ``classify_message``, ``enrich_complaint``, ``complaint_event`` and
``complaint_events`` receive copies
in which card, ID and phone numbers and e-mail addresses (in texts and contacts) are masked,
unless the plugin object has ``needs_personal_data = True`` (a plugin that looks a payment up
by card number, say). Senders get the real contact: they must reach the customer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

PROJECT_NAME = "complaint_gateway"
#: The entry-point group installed packages register their plugins under.
ENTRY_POINT_GROUP = "complaint_gateway.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

if TYPE_CHECKING:
    from normalizer.schema import Classification, Complaint, ComplaintEvent, EvidenceLink, InboundMessage

    from .contract import GatewayServices, Poller, RouteMount, Sender


@hookspec
def gateway_routes(services: GatewayServices) -> RouteMount | None:
    """Contribute HTTP routes (webhooks) to the gateway.

    Called once, while the HTTP app is built (before it serves, before Redis is connected:
    reach Redis through ``services`` inside the handlers, not here). A plain function, never
    ``async def`` (refused at load); the handlers it returns are ``async``.

    :param services: the gateway's shared services (intake, Redis, blob store, settings).
    :returns: a ``RouteMount`` whose handlers are mounted under ``/webhooks/<plugin name>``
        unless it names another ``prefix``; ``None`` when the plugin has no routes.
    """


@hookspec
def gateway_pollers(services: GatewayServices) -> list[Poller] | None:
    """Contribute long-running tasks the worker runs (an IMAP mailbox, a polled API).

    Called once when a worker process starts. Each ``Poller.run`` is started as its own task,
    restarted with backoff when it raises, and cancelled when the worker stops. A poller that
    must run on one worker only takes a lease through ``services.leases``. A plain function,
    never ``async def`` (refused at load); ``Poller.run`` is the ``async`` part.

    :param services: the gateway's shared services, Redis connected.
    :returns: a list of ``Poller`` objects, or ``None``.
    """


@hookspec(firstresult=True)
def channel_sender(channel: str, services: GatewayServices) -> Sender | None:
    """Give the sender that delivers messages on ``channel``.

    Called by the worker each time something goes out (acknowledgement, agent reply, notice).
    First non-``None`` answer wins. A plain function, never ``async def`` (refused at load): it
    hands back the sender at once, and the sender's ``send`` is the ``async`` part.

    :param channel: the channel name of the complaint (``app``, ``email``, ``twilio_sms`` ...).
    :param services: the gateway's shared services.
    :returns: an object with ``async send(message: OutboundMessage) -> DeliveryResult``,
        or ``None`` when this plugin does not serve ``channel``.
    """


@hookspec(firstresult=True)
def classify_message(message: InboundMessage) -> Classification | None:
    """Categorise a new message before the built-in zh/en keyword rules do.

    Called by the worker once per message that opens a complaint. First non-``None`` wins;
    when every plugin answers ``None`` the keyword rules decide. A category that is not one
    of the known ids is ignored (and counted as a plugin error).

    :param message: the normalised inbound message.
    :returns: a ``Classification``, or ``None`` to leave the decision to others.
    """


@hookspec
def enrich_complaint(complaint: Complaint, message: InboundMessage) -> dict[str, Any] | None:
    """Add facts to a new complaint (e.g. look the transaction up in the payment system).

    Called by the worker after categorisation, before routing, once per new complaint; may be
    called again for the same complaint if the worker retries, so it must be safe to repeat.

    :param complaint: the complaint about to be opened (not yet stored).
    :param message: the message that opens it.
    :returns: a mapping with any of ``transaction_id`` (str), ``amount`` ({"value", "currency"}),
        ``tags`` (list of str), ``priority_boost`` (int), ``payment_check`` (a mapping in
        ``normalizer.schema.PaymentCheck``'s shape: ``state`` required, ``charge`` when found; see
        docs/payment-records.md); ``None`` for nothing. A ``payment_check`` with ``state``
        ``"retrying"`` and ``retry_after_seconds`` asks the gateway to call this plugin alone again
        later, in a job of its own (at most 20 tries; ``complaint.payment_check.tries`` says how many
        so far); the case opens meanwhile and never waits for it.
    """


@hookspec
def complaint_event(event: ComplaintEvent, complaint: Complaint) -> None:
    """Listen to what happens to complaints: ``created``, ``routed``, ``replied``, ``merged`` (a
    repeat report joined it), ``sla_warning``, ``sla_breached``, ``resolved``, ``reopened``,
    ``refund_approved`` (a refund or compensation to carry out: ``detail`` has ``amount``,
    ``currency``, ``method``, ``kind`` and ``proposal``, which with ``complaint_id`` keys it).

    Called by the worker after the change is stored (at least once: a listener may see an
    event twice after a crash, so it should key on ``event.kind`` + ``complaint_id`` + ``at``).
    A plugin that also implements ``complaint_events`` gets batched events through that hook
    instead; one that implements only ``complaint_events`` gets single events as batches of one.

    :param event: what happened, when, by whom.
    :param complaint: the complaint as it stands after the change.
    :returns: nothing; a raised exception is logged and counted, never retried.
    """


@hookspec
def complaint_events(events: list[ComplaintEvent], complaints: dict[str, Complaint]) -> None:
    """Optional: listen to complaint events a batch at a time (the deadline timers' ``sla_warning``
    and ``sla_breached``, which an outage raises by the thousand, come in batches).

    Called by the worker's ``dispatch_events`` job, one batch at a time, oldest event first (a
    complaint's events in the order they happened). A plugin without this hook gets the same
    events through ``complaint_event``, one call each, in order. At least once: after a crash,
    or after any batch listener refused a batch, a batch comes again; key on ``event.kind`` +
    ``complaint_id`` + ``at`` (and ``detail["deadline"]`` where there is one).

    :param events: what happened, oldest first (up to 100).
    :param complaints: the events' complaints by id, as they stand now.
    :returns: nothing. Raise to refuse the batch (your endpoint is away): it is offered again
        with backoff (2 s doubling to 256 s, for up to a day), and the later events wait behind
        it, so that order holds; the error is logged and counted.
    """


@hookspec(firstresult=True)
def fetch_evidence(evidence: EvidenceLink, channel: str, services: GatewayServices) -> tuple[bytes, str] | None:
    """Fetch an attachment the channel only announced by URL (MMS media, a WhatsApp media id).

    Called by the worker's ``fetch_evidence`` job, never in a webhook, for each attachment whose
    ``remote_url`` is set and whose bytes are not stored yet; the complaint never waits for it
    (the attachment shows as ``pending`` meanwhile). First non-``None`` answer wins. Raise to have
    this attachment tried again later (doubling backoff, bounded tries, then ``failed`` with the
    reason); answer ``None`` when the media is gone or the channel is not yours (the attachment is
    marked failed).

    :param evidence: the announced attachment (``remote_url``, declared ``content_type``).
    :param channel: the channel of the message.
    :param services: the gateway's shared services.
    :returns: ``(bytes, content type)``, or ``None``.
    """
