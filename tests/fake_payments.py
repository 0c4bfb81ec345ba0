"""A payment-records API on loopback, in the shape docs/payment-records.md documents: what the
``payment_records`` plugin is tested against (a desk's own system answers the same way).

``GET /v1/charges/{transaction_id}`` answers one charge (404: none); ``GET /v1/charges`` with
``account_id``, ``from``, ``to`` and optionally ``amount`` + ``currency`` and ``merchant`` answers
``{"items": [...]}``. Both want ``Authorization: Bearer <token>``. ``outage.on = True`` makes
both answer 503 until it is switched off again (the records system away).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from tests.fake_api import Call, FakeApi, Outage

TOKEN = "test-payments-token-0001"


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class FakePayments:
    """The records (``add``), the API on loopback (``base``: what the plugin's ``url`` is set to)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.charges: list[dict[str, Any]] = []
        self.api = FakeApi()
        self.api.route("GET", r"/v1/charges/(?P<txn>[A-Za-z0-9_-]+)", self._one)
        self.api.route("GET", r"/v1/charges", self._search)
        self.outage = Outage(self.api, "/v1/charges", status=503, body={"error": "maintenance"})
        self.base = ""

    def start(self) -> "FakePayments":
        self.api.start()
        self.base = f"{self.api.base}/v1"
        return self

    def stop(self) -> None:
        self.api.stop()

    def add(self, transaction_id: str, account_id: str, value: str, merchant: str, at: datetime, *,
            status: str = "succeeded", currency: str = "CNY") -> None:
        self.charges.append({
            "transaction_id": transaction_id, "account_id": account_id,
            "amount": {"value": value, "currency": currency}, "status": status, "merchant": merchant,
            "charged_at": at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
            # what a real system may add: the plugin must ignore it and never keep it
            "card": {"brand": "visa", "number": "4111111111111111"},
        })

    @property
    def lookups(self) -> list[Call]:
        return [c for c in self.api.calls if c.path.startswith("/v1/charges")]

    def _refused(self, call: Call) -> tuple[int, Any, str] | None:
        if call.headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": "unauthorized"}, "application/json"
        return None

    def _one(self, call: Call, match: "re.Match[str]") -> tuple[int, Any, str]:
        refused = self._refused(call)
        if refused:
            return refused
        found = next((c for c in self.charges if c["transaction_id"] == match["txn"]), None)
        if found is None:
            return 404, {"error": "no such charge"}, "application/json"
        return 200, found, "application/json"

    def _search(self, call: Call, match: "re.Match[str]") -> tuple[int, Any, str]:
        refused = self._refused(call)
        if refused:
            return refused
        q = call.query
        start, end = _at(q["from"]), _at(q["to"])
        items = [c for c in self.charges
                 if c["account_id"] == q["account_id"] and start <= _at(c["charged_at"]) <= end
                 and ("amount" not in q or (Decimal(c["amount"]["value"]) == Decimal(q["amount"])
                                            and c["amount"]["currency"] == q.get("currency", "CNY")))
                 and ("merchant" not in q or c["merchant"] == q["merchant"])]
        return 200, {"items": items}, "application/json"


__all__ = ["TOKEN", "FakePayments"]
