"""How complaints look in JSON to each kind of reader."""

from __future__ import annotations

from typing import Any

import msgspec

from normalizer.pii import mask_pii
from normalizer.schema import Complaint

_encoder = msgspec.json.Encoder()
#: What of a history entry's detail the customer sees (not rules, versions, workers, agents).
PUBLIC_DETAIL = frozenset({"channel", "outcome", "reason", "skill", "lease_expires_at"})
#: What of a refund the customer sees (a plan rejected inside the desk is not shown).
PUBLIC_REFUND = ("amount", "method", "kind", "state", "expected")


def complaint_json(complaint: Complaint) -> dict[str, Any]:
    """The full view for agents and supervisors (design.md's field names)."""
    return msgspec.json.decode(_encoder.encode(complaint))


def masked(view: dict[str, Any]) -> dict[str, Any]:
    """Card, ID and phone numbers and e-mail addresses inside the texts replaced by placeholders
    (list views, and readers whose role may not see them)."""
    for entry in view.get("messages", []):
        entry["text"] = mask_pii(entry.get("text") or "")
        if entry.get("subject"):
            entry["subject"] = mask_pii(entry["subject"])
    for reply in view.get("replies", []):
        reply["text"] = mask_pii(reply.get("text") or "")
    view["pii_masked"] = True
    return view


def complaint_list_item(complaint: Complaint) -> dict[str, Any]:
    return masked(complaint_json(complaint))


def complaint_public(complaint: Complaint) -> dict[str, Any]:
    """What the customer's app may see: no internal history, no agent names, no repeat-report
    mechanics; personal numbers masked (a lost phone must not show a card number)."""
    view = masked(complaint_json(complaint))
    view.pop("merges", None)
    view["history"] = [h for h in view["history"] if h.get("public")]
    for entry in view["history"]:
        entry["actor"] = "desk" if entry["actor"] not in ("customer", "system") else entry["actor"]
        entry["detail"] = {k: v for k, v in entry.get("detail", {}).items() if k in PUBLIC_DETAIL}
    view.pop("assignee", None)
    view.pop("lease_expires_at", None)
    view.pop("root_cause", None)  # the desk's own analysis (fraud, an operator's error)
    refund = view.get("refund")  # what the customer is owed and when; not who decided or why
    view["refund"] = None if not refund or refund.get("state") == "rejected" else {
        k: refund.get(k) for k in PUBLIC_REFUND}
    view.pop("routed_by", None)
    for item in view.get("materials", []):  # what the desk asked for and what arrived; not which agent asked
        item.pop("requested_by", None)
    for reply in view["replies"]:
        reply["author"] = "desk" if reply["author"] != "system" else "system"
    return view
