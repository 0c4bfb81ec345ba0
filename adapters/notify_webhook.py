"""Built-in complaint-event listener: tells supervisors about deadline warnings, breaches and
reopened cases by POSTing to a webhook (a chat room's incoming webhook, an on-call tool).

The body is JSON without personal data (case number, category, channel, skill, priority, what
happened); it is signed with ``X-Gateway-Signature: sha256=<HMAC of the body with the secret>``.
A failed POST is tried three times with a short backoff, then logged and counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import httpx
import msgspec

from plugins.kit import hookimpl, tls
from normalizer.schema import Complaint, ComplaintEvent


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

    @hookimpl
    async def complaint_event(self, event: ComplaintEvent, complaint: Complaint) -> None:
        if not self.settings.url or event.kind not in self.settings.kinds:
            return None
        body = json.dumps({
            "kind": event.kind, "at": event.at.isoformat(), "case_number": complaint.case_number,
            "complaint_id": complaint.id, "category": complaint.category, "channel": complaint.channel,
            "skill": complaint.skill, "priority": complaint.priority, "status": complaint.status.value,
            "detail": event.detail,
        }, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json",
                   "X-Gateway-Event": event.kind,
                   "X-Gateway-Delivery": f"{event.complaint_id}:{event.kind}:{int(event.at.timestamp() * 1000)}"}
        if self.settings.secret:
            headers["X-Gateway-Signature"] = "sha256=" + hmac.new(self.settings.secret.encode(), body,
                                                                  hashlib.sha256).hexdigest()
        error: Exception | None = None
        for attempt in range(3):
            try:
                async with httpx.AsyncClient(verify=tls(), timeout=self.settings.timeout_seconds) as http:
                    response = await http.post(self.settings.url, content=body, headers=headers)
                if response.status_code < 500:
                    return None
                error = RuntimeError(f"webhook answered {response.status_code}")
            except httpx.HTTPError as exc:
                error = exc
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"escalation webhook failed: {error}")


__all__ = ["NotifyWebhook", "NotifySettings"]
