"""Built-in complaint-event listener: tells supervisors about deadline warnings, breaches and
reopened cases by POSTing to a webhook (a chat room's incoming webhook, an on-call tool).

The body is JSON without personal data (case number, category, channel, skill, priority, what
happened), one POST per event; it is signed with ``X-Gateway-Signature: sha256=<HMAC of the body
with the secret>``, and ``X-Gateway-Delivery`` names the event (the same on every redelivery).
A failed POST is tried three times with a short backoff. Events that come in a batch
(``complaint_events``: the deadline timers' warnings and breaches) share one connection; when a
POST still fails, the batch is refused and the gateway offers it again later with backoff (the
events POSTed already are not POSTed again by this process); a single event that fails is
logged and counted.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json

import httpx
import msgspec

from plugins.kit import hookimpl, tls
from normalizer.schema import Complaint, ComplaintEvent

#: Deliveries this process made, remembered so that a batch offered again skips them.
REMEMBERED = 4096


class NotifySettings(msgspec.Struct, forbid_unknown_fields=True):
    #: Where to POST ("" = off) (GATEWAY_ESCALATION_WEBHOOK).
    url: str = ""
    secret: str = ""
    kinds: list[str] = msgspec.field(default_factory=lambda: ["sla_warning", "sla_breached", "reopened"])
    timeout_seconds: float = 5.0


class NotifyWebhook:
    Settings = NotifySettings

    def __init__(self, settings: NotifySettings | None = None) -> None:
        self.settings = settings or NotifySettings()
        #: Without a URL there is nobody to tell: the worker then queues no event jobs for us.
        self.listening = bool(self.settings.url)
        self._delivered: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()

    @hookimpl
    async def complaint_event(self, event: ComplaintEvent, complaint: Complaint) -> None:
        if not self._wanted(event):
            return None
        async with self._client() as http:
            await self._post(http, event, complaint)
        return None

    @hookimpl
    async def complaint_events(self, events: list[ComplaintEvent], complaints: dict[str, Complaint]) -> None:
        """Each event in order; a complaint whose event could not be POSTed has its later events
        held back (the order a supervisor reads them in), the others go on; then the batch is
        refused if anything failed."""
        wanted = [e for e in events if self._wanted(e) and _key(e) not in self._delivered]
        if not wanted:
            return None
        failed: set[str] = set()
        error: Exception | None = None
        async with self._client() as http:
            for event in wanted:
                if event.complaint_id in failed:
                    continue
                try:
                    await self._post(http, event, complaints[event.complaint_id])
                except RuntimeError as exc:
                    failed.add(event.complaint_id)
                    error = exc
        if error is not None:
            raise RuntimeError(f"escalation webhook failed for {len(failed)} case(s): {error}")
        return None

    def _wanted(self, event: ComplaintEvent) -> bool:
        return bool(self.settings.url) and event.kind in self.settings.kinds

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=tls(), timeout=self.settings.timeout_seconds)

    async def _post(self, http: httpx.AsyncClient, event: ComplaintEvent, complaint: Complaint) -> None:
        body = json.dumps({
            "kind": event.kind, "at": event.at.isoformat(), "case_number": complaint.case_number,
            "complaint_id": complaint.id, "category": complaint.category, "channel": complaint.channel,
            "skill": complaint.skill, "priority": complaint.priority, "status": complaint.status.value,
            "detail": event.detail,
        }, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json",
                   "X-Gateway-Event": event.kind,
                   "X-Gateway-Delivery": _key(event)[0]}
        if self.settings.secret:
            headers["X-Gateway-Signature"] = "sha256=" + hmac.new(self.settings.secret.encode(), body,
                                                                  hashlib.sha256).hexdigest()
        error: Exception | None = None
        for attempt in range(3):
            try:
                response = await http.post(self.settings.url, content=body, headers=headers)
                if response.status_code < 500:
                    self._remember(event)
                    return None
                error = RuntimeError(f"webhook answered {response.status_code}")
            except httpx.HTTPError as exc:
                error = exc
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"escalation webhook failed: {error}")

    def _remember(self, event: ComplaintEvent) -> None:
        self._delivered[_key(event)] = None
        while len(self._delivered) > REMEMBERED:
            self._delivered.popitem(last=False)


def _key(event: ComplaintEvent) -> tuple[str, str]:
    """The delivery id (``X-Gateway-Delivery``), and the deadline, which tells apart two warnings
    given to one case in the same millisecond."""
    return f"{event.complaint_id}:{event.kind}:{int(event.at.timestamp() * 1000)}", event.detail.get("deadline", "")


__all__ = ["NotifyWebhook", "NotifySettings"]
