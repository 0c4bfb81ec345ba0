"""Built-in enricher: a complaint checked against the payment system's records (核实支付记录).

For a payment-amount or transaction complaint (or any case that names a transaction id) it asks
a payment-records API (the shape is in docs/payment-records.md, so a desk can point it at its own
system) for the charge, by transaction id, else by the amount the customer states within a time
window on the customer's own account (the app's ``user_id``). It answers the gateway with a
``payment_check``: the charge (amount, status, merchant, time), every other charge that looks like
the same payment taken again (same account, merchant and amount within a few minutes, both
succeeded, neither refunded), whether a "charged twice" complaint is thereby confirmed, and whether
the amount the customer states differs from the charge. The gateway turns that into tags, priority
and history (``router.pipeline.apply_enrichment``).

A records system that does not answer (down, slow, 5xx, 429) never holds the case back: the
answer says ``retrying`` with ``retry_after_seconds`` and the worker asks this plugin again later,
with doubling backoff, up to ``retry_tries`` lookups in all; then ``failed`` with the reason. A
refusal (401, 403, another 4xx) is not retried: the settings are wrong, and the reason says so.

With ``demo = true`` and no ``url`` the plugin serves a read-only demo of that API under its own
mount (``/webhooks/payment_records/charges``) and looks its charges up there, over HTTP like a
real system: ``make run``'s walkthrough data. A deployment sets ``PAYMENT_RECORDS_URL`` (then the
demo is neither served nor used) or switches the demo off.

Privacy: card numbers are never asked for, kept or logged; transaction ids are.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import msgspec
from litestar import Request, get
from litestar.params import PathParameter, QueryParameter

from normalizer.schema import Amount, Complaint, InboundMessage, PaymentCharge
from plugins.contract import GatewayServices, RouteMount
from plugins.hookspecs import hookimpl
from plugins.problems import ProblemError
from plugins.webhooks import same_secret, tls

log = logging.getLogger("gateway.plugins.payment_records")

NAME = "payment_records"
#: The mount of the demo API, under the gateway's public URL.
DEMO_MOUNT = f"/webhooks/{NAME}"
MAX_BACKOFF_S = 3600.0
#: "Charged twice"-type wording (zh / en), in any of the case's messages.
CHARGED_TWICE = re.compile(
    r"重复(?:扣款|扣费|支付|收费|扣)|(?:扣|收|付|支付|刷)(?:款|费)?了?(?:我|我的)?.{0,8}?(?:两|二|2)(?:次|笔|遍)|"
    r"(?:两|二|2)(?:次|笔)(?:扣款|扣费|付款)|多扣了?|被扣了?(?:两|二|2)次|"
    r"charged\s+(?:me\s+)?twice|double[-\s]?charged?|duplicate\s+(?:charge|payment)|charged\s+two\s+times|"
    r"billed\s+twice|paid\s+twice|two\s+charges",
    re.IGNORECASE)


class PaymentRecordsSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: Base URL of the payment-records API (PAYMENT_RECORDS_URL); "" = off, unless ``demo``.
    url: str = ""
    #: Bearer token for it (PAYMENT_RECORDS_TOKEN); the demo API asks for it too when set.
    token: str = ""
    #: One request's time limit; the case opening waits at most about twice this (charge + duplicates).
    timeout_seconds: float = 3.0
    #: Without a transaction id: how far before the customer's message a charge of the stated amount is looked for.
    window_minutes: int = 4320
    #: Two charges this close (same account, merchant, amount) look like one payment taken twice.
    duplicate_window_minutes: int = 10
    #: The categories worth a lookup; any case that names a transaction id is looked up too.
    categories: list[str] = msgspec.field(default_factory=lambda: ["payment_amount", "transaction"])
    #: Lookups in all while the records system does not answer, then given up with the reason.
    retry_tries: int = 6
    #: The wait before the second lookup; doubling after each failed one (capped at an hour).
    retry_backoff_seconds: float = 30.0
    #: Serve and use the demo records (only while ``url`` is empty): ``make run``'s data.
    demo: bool = False
    #: Where the gateway itself is reached (GATEWAY_PUBLIC_URL): the demo API is under it.
    demo_base_url: str = ""


class ChargeRecord(msgspec.Struct, kw_only=True):
    """One charge as the API answers it (fields the API adds are ignored: a card number never stays)."""

    transaction_id: str
    amount: Amount
    status: str
    account_id: str | None = None
    merchant: str | None = None
    charged_at: datetime | None = None

    def as_charge(self) -> PaymentCharge:
        return PaymentCharge(transaction_id=self.transaction_id, amount=self.amount, status=self.status,
                             merchant=self.merchant, charged_at=self.charged_at)


class ChargeList(msgspec.Struct):
    items: list[ChargeRecord] = []


class RecordsUnavailable(Exception):
    """The records system did not answer usefully (network, timeout, 5xx, 429, a garbled body): try later."""


class RecordsRefused(Exception):
    """The records system refused the question (401, 403, another 4xx): the settings need a look."""


def _decimal(amount: Amount) -> Decimal | None:
    try:
        return Decimal(amount.value)
    except (InvalidOperation, ValueError):
        return None


def same_amount(a: Amount, b: Amount) -> bool:
    return a.currency.upper() == b.currency.upper() and _decimal(a) is not None and _decimal(a) == _decimal(b)


def _rfc3339(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RecordsApi:
    """The documented API (docs/payment-records.md) over one HTTP client."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")

    async def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response | None:
        try:
            response = await self.http.get(self.base_url + path, params=params)
        except httpx.TimeoutException:
            raise RecordsUnavailable("no answer in time") from None
        except httpx.HTTPError as exc:
            raise RecordsUnavailable(f"{type(exc).__name__}") from None
        if response.status_code == 404:
            return None
        if response.status_code >= 500 or response.status_code == 429:
            raise RecordsUnavailable(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise RecordsRefused(f"HTTP {response.status_code} (check the plugin's url and token)")
        return response

    async def charge(self, transaction_id: str) -> ChargeRecord | None:
        response = await self._get(f"/charges/{quote(transaction_id, safe='')}")
        return None if response is None else _decode(response, ChargeRecord)

    async def search(self, *, account_id: str, amount: Amount, start: datetime, end: datetime,
                     merchant: str | None = None) -> list[ChargeRecord]:
        params = {"account_id": account_id, "amount": amount.value, "currency": amount.currency,
                  "from": _rfc3339(start), "to": _rfc3339(end)}
        if merchant:
            params["merchant"] = merchant
        response = await self._get("/charges", params)
        if response is None:
            raise RecordsRefused("HTTP 404 on the charge search (check the plugin's url)")
        return _decode(response, ChargeList).items


def _decode(response: httpx.Response, model: Any) -> Any:
    try:
        return msgspec.json.decode(response.content, type=model)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecordsUnavailable(f"an answer not in the documented shape: {str(exc)[:120]}") from None


def charged_twice(complaint: Complaint, message: InboundMessage) -> bool:
    """The customer says they were charged twice (in any message of the case)."""
    texts = [message.text, *(m.text for m in complaint.messages)]
    return any(CHARGED_TWICE.search(text or "") for text in texts)


def account_of(complaint: Complaint, message: InboundMessage) -> str | None:
    """The customer's account in the payment system: the app's user id (other channels know none)."""
    for contact in (message.sender, complaint.contact):
        if contact.kind == "app_user":
            return contact.value
    return None


class PaymentRecords:
    """The enricher (``enrich_complaint``) and, in demo mode, the demo API (``gateway_routes``)."""

    Settings = PaymentRecordsSettings

    def __init__(self, settings: PaymentRecordsSettings | None = None) -> None:
        self.settings = settings or PaymentRecordsSettings()
        self.base_url = self.settings.url.rstrip("/")
        self.serves_demo = self.settings.demo and not self.base_url
        if self.serves_demo and self.settings.demo_base_url:
            self.base_url = self.settings.demo_base_url.rstrip("/") + DEMO_MOUNT
        #: off (no records to ask): the gateway skips this enricher, masking nothing for it
        self.enriching = bool(self.base_url)
        if not self.base_url:
            log.warning("payment_records: off (no url: set PAYMENT_RECORDS_URL%s)",
                        ", or GATEWAY_PUBLIC_URL for the demo records" if self.settings.demo else "")
        elif self.serves_demo:
            log.warning("payment_records: looking charges up in the DEMO records at %s (set PAYMENT_RECORDS_URL "
                        "for the desk's own payment system)", self.base_url)

    # -- the enricher ----------------------------------------------------------------------------

    @hookimpl
    async def enrich_complaint(self, complaint: Complaint, message: InboundMessage) -> dict[str, Any] | None:
        if not self.base_url:
            return None
        transaction_id = complaint.transaction_id or message.transaction_id
        if not transaction_id and complaint.category not in self.settings.categories:
            return None
        claimed = complaint.amount or message.amount
        account = account_of(complaint, message)
        if not transaction_id and not (claimed and account):
            return None  # nothing to look a charge up by
        previous = complaint.payment_check
        tries = previous.tries + 1 if previous is not None and previous.state == "retrying" else 1
        try:
            found = await self.look_up(transaction_id, claimed, account, message.received_at)
        except RecordsUnavailable as exc:
            reason = f"the payment records did not answer: {exc}"
            if tries < self.settings.retry_tries:
                delay = min(MAX_BACKOFF_S, self.settings.retry_backoff_seconds * 2 ** (tries - 1))
                log.info("payment_records: lookup %d for %s failed (%s); next in %.0f s", tries, complaint.id, exc,
                         delay)
                return {"payment_check": {"state": "retrying", "error": reason, "claimed_amount": _builtin(claimed)},
                        "retry_after_seconds": delay}
            log.warning("payment_records: gave up on %s after %d lookups (%s)", complaint.id, tries, exc)
            return {"payment_check": {"state": "failed", "error": f"gave up after {tries} lookups: {reason}",
                                      "claimed_amount": _builtin(claimed)}}
        except RecordsRefused as exc:
            log.warning("payment_records: lookup for %s refused: %s", complaint.id, exc)
            return {"payment_check": {"state": "failed", "error": f"the payment records refused the lookup: {exc}",
                                      "claimed_amount": _builtin(claimed)}}
        return {"payment_check": self.check_of(found, claimed, charged_twice(complaint, message))}

    async def look_up(self, transaction_id: str | None, claimed: Amount | None, account: str | None,
                      said_at: datetime) -> tuple[ChargeRecord | None, list[ChargeRecord]]:
        """The charge (by transaction id, else by the stated amount on the account within the
        window before the message) and the charges that look like it taken again."""
        async with httpx.AsyncClient(verify=tls(), timeout=self.settings.timeout_seconds, headers=self._auth()) as http:
            api = RecordsApi(http, self.base_url)
            charge = await api.charge(transaction_id) if transaction_id else None
            if charge is None and claimed is not None and account:
                window = timedelta(minutes=self.settings.window_minutes)
                items = await api.search(account_id=account, amount=claimed, start=said_at - window,
                                         end=said_at + timedelta(minutes=5))
                items.sort(key=lambda c: (c.status != "succeeded", c.charged_at or said_at))
                charge = items[0] if items else None
            if charge is None:
                return None, []
            return charge, await self.duplicates_of(api, charge)

    async def duplicates_of(self, api: RecordsApi, charge: ChargeRecord) -> list[ChargeRecord]:
        """Other succeeded charges of the same account, merchant and amount close to ``charge``."""
        if charge.status != "succeeded" or not charge.account_id or charge.charged_at is None:
            return []
        near = timedelta(minutes=self.settings.duplicate_window_minutes)
        items = await api.search(account_id=charge.account_id, amount=charge.amount, merchant=charge.merchant,
                                 start=charge.charged_at - near, end=charge.charged_at + near)
        return sorted((c for c in items
                       if c.transaction_id != charge.transaction_id and c.status == "succeeded"
                       and c.merchant == charge.merchant and same_amount(c.amount, charge.amount)
                       and c.charged_at is not None and abs(c.charged_at - charge.charged_at) <= near),
                      key=lambda c: c.charged_at or charge.charged_at)

    @staticmethod
    def check_of(found: tuple[ChargeRecord | None, list[ChargeRecord]], claimed: Amount | None,
                 twice: bool) -> dict[str, Any]:
        charge, duplicates = found
        if charge is None:
            return {"state": "not_found", "found": False, "claimed_amount": _builtin(claimed)}
        return {
            "state": "found", "found": True, "charge": msgspec.to_builtins(charge.as_charge()),
            "duplicates": [msgspec.to_builtins(d.as_charge()) for d in duplicates],
            "duplicate_confirmed": twice and bool(duplicates),
            "amount_mismatch": claimed is not None and not same_amount(claimed, charge.amount),
            "claimed_amount": _builtin(claimed),
        }

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.token}"} if self.settings.token else {}

    # -- the demo API ----------------------------------------------------------------------------

    @hookimpl
    def gateway_routes(self, services: GatewayServices) -> RouteMount | None:
        if not self.serves_demo:
            return None
        records = demo_records(datetime.now(timezone.utc))
        token = self.settings.token

        def authorised(request: Request[Any, Any, Any]) -> None:
            if not token:
                return
            given = request.headers.get("authorization", "")
            if not (given.startswith("Bearer ") and same_secret(given[7:], token)):
                raise ProblemError(401, "unauthorized", "The payment records want the bearer token.")

        @get("/charges/{transaction_id:str}", operation_id="demoPaymentCharge", tags=["payment records (demo)"],
             summary="One charge of the demo payment records, by transaction id")
        async def charge(request: Request[Any, Any, Any],
                         transaction_id: Annotated[str, PathParameter(max_length=64)]) -> ChargeRecord:
            authorised(request)
            found = next((c for c in records if c.transaction_id == transaction_id.upper()), None)
            if found is None:
                raise ProblemError(404, "charge_not_found", f"No charge {transaction_id[:64]}.")
            return found

        @get("/charges", operation_id="demoPaymentCharges", tags=["payment records (demo)"],
             summary="Charges of one account of the demo payment records, by amount, merchant and time")
        async def charges(
            request: Request[Any, Any, Any],
            account_id: Annotated[str, QueryParameter(max_length=128)],
            start: Annotated[datetime, QueryParameter(name="from")],
            end: Annotated[datetime, QueryParameter(name="to")],
            amount: Annotated[str | None, QueryParameter(max_length=32)] = None,
            currency: Annotated[str | None, QueryParameter(max_length=3)] = None,
            merchant: Annotated[str | None, QueryParameter(max_length=128)] = None,
        ) -> ChargeList:
            authorised(request)
            start, end = (t if t.tzinfo else t.replace(tzinfo=timezone.utc) for t in (start, end))  # naive: UTC
            wanted = Amount(value=amount, currency=currency or "CNY") if amount else None
            if wanted is not None and _decimal(wanted) is None:
                raise ProblemError(422, "invalid_amount", "amount must be a decimal string.", field="amount")
            return ChargeList(items=[
                c for c in records
                if c.account_id == account_id and c.charged_at is not None and start <= c.charged_at <= end
                and (wanted is None or same_amount(c.amount, wanted)) and (merchant is None or c.merchant == merchant)
            ])

        return RouteMount(handlers=[charge, charges])


def _builtin(amount: Amount | None) -> dict[str, str] | None:
    return None if amount is None else {"value": amount.value, "currency": amount.currency}


def demo_records(now: datetime) -> list[ChargeRecord]:
    """The demo payment records, timed back from ``now`` (the gateway's start): user ``u1`` was
    charged ¥128.50 twice at Metro Coffee a minute and a half apart, and paid ¥88.00 at City Mart
    yesterday; a ¥45.00 charge of ``u1`` was refunded; ``u2`` paid ¥300.00 at Fresh Market; ``u3`` was
    charged ¥899.00 twice at Star Electronics a minute apart (a refund above the approval threshold)."""
    cny = "CNY"

    def charge(txn: str, account: str, value: str, merchant: str, status: str, ago: timedelta) -> ChargeRecord:
        return ChargeRecord(transaction_id=txn, account_id=account, amount=Amount(value=value, currency=cny),
                            status=status, merchant=merchant, charged_at=(now - ago).replace(microsecond=0))

    return [
        charge("T20261201100001", "u1", "128.50", "Metro Coffee", "succeeded", timedelta(hours=2)),
        charge("T20261201100002", "u1", "128.50", "Metro Coffee", "succeeded", timedelta(hours=2, seconds=-90)),
        charge("T20261130100003", "u1", "88.00", "City Mart", "succeeded", timedelta(days=1)),
        charge("T20261201100004", "u1", "45.00", "Book Nook", "refunded", timedelta(hours=3)),
        charge("T20261201200001", "u2", "300.00", "Fresh Market", "succeeded", timedelta(hours=5)),
        charge("T20261201300001", "u3", "899.00", "Star Electronics", "succeeded", timedelta(hours=1)),
        charge("T20261201300002", "u3", "899.00", "Star Electronics", "succeeded", timedelta(hours=1, seconds=-60)),
    ]


__all__ = ["PaymentRecords", "PaymentRecordsSettings", "demo_records"]
