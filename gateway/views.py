"""How complaints look in JSON to each kind of reader."""

from __future__ import annotations

from typing import Any

import msgspec

from normalizer.schema import Complaint

_encoder = msgspec.json.Encoder()


def complaint_json(complaint: Complaint) -> dict[str, Any]:
    """The full view for agents and supervisors (design.md's field names)."""
    return msgspec.json.decode(_encoder.encode(complaint))


def complaint_public(complaint: Complaint) -> dict[str, Any]:
    """What the customer's app may see: no internal history, no agent names."""
    view = complaint_json(complaint)
    view["history"] = [h for h in view["history"] if h.get("public")]
    for entry in view["history"]:
        entry["actor"] = "desk" if entry["actor"] not in ("customer", "system") else entry["actor"]
    view.pop("assignee", None)
    view.pop("lease_expires_at", None)
    view.pop("routed_by", None)
    for reply in view["replies"]:
        reply["author"] = "desk" if reply["author"] != "system" else "system"
    return view
