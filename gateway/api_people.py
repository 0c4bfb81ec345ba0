"""The operations API, part two: customers (who is who across channels) and incidents (many
customers, one fault)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import PathParameter, QueryParameter

from gateway import paths
from gateway.api_common import CONTACT_KINDS_PATTERN, STAFF, Services
from gateway.api_doc import documented
from gateway.api_types import Customer, Incident, IncidentPage, Linked
from gateway.auth import ROLE_SUPERVISOR, principal_of, roles_guard
from router.customers import Customers
from plugins.problems import ProblemError
from plugins.requests import decode_json, read_body, require_json
from router.store import NotFound
from normalizer.contacts import InvalidContact, normalise, parse_label
from normalizer.inbound import InputRejected, clean_text
from normalizer.schema import Contact
from router import cases
from router.incidents import Incidents


class LinkIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: Annotated[str, msgspec.Meta(pattern=CONTACT_KINDS_PATTERN)]
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    #: Take the contact from the customer it belongs to now (recorded on both).
    move: bool = False


class AnswerIn(msgspec.Struct, forbid_unknown_fields=True):
    """The answer every complaint of the incident gets, in the customer's language."""

    zh: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    en: Annotated[str, msgspec.Meta(max_length=4000)] = ""


class CustomersController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["customers"]

    @documented(ok=Customer)
    @get(paths.CUSTOMER, operation_id="getCustomer", opt={"roles": STAFF},
         summary="A customer: linked contacts, open cases, and the history of links")
    async def show(self, services: Services,
                   customer_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        return await Customers(services.store).view(customer_id)

    @documented(LinkIn, Linked, problems=(409,),
                example={"kind": "email", "value": "wang@example.com", "reason": "Confirmed on the phone",
                         "move": False})
    @post(paths.CUSTOMER_CONTACTS, operation_id="linkContact", status_code=201, opt={"roles": STAFF},
          summary="Link a contact to the customer (409 if it is someone else's, unless move)")
    async def link(self, request: Request[Any, Any, Any], services: Services,
                   customer_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), LinkIn)
        try:
            contact = normalise(Contact(kind=incoming.kind, value=incoming.value))
        except InvalidContact as exc:
            raise ProblemError(422, "invalid_contact", str(exc), field="value") from None
        customers = Customers(services.store)
        result = await customers.link(customer_id, contact, by=principal_of(request).actor, reason=incoming.reason,
                                      move=incoming.move)
        return {**result, "customer": await customers.view(customer_id)}

    @documented(ok=Customer, problems=(400,))
    @delete(paths.CUSTOMER_CONTACT, operation_id="unlinkContact", status_code=200, opt={"roles": STAFF},
            summary="Unlink a contact (kind:value); its next message starts a new customer")
    async def unlink(self, request: Request[Any, Any, Any], services: Services,
                     customer_id: Annotated[str, PathParameter(max_length=80)],
                     contact: Annotated[str, PathParameter(max_length=300)],
                     reason: Annotated[str, QueryParameter(min_length=1, max_length=500)]) -> dict[str, Any]:
        try:
            parsed = parse_label(unquote(contact))
        except InvalidContact as exc:
            raise ProblemError(422, "invalid_contact", str(exc), field="contact") from None
        customers = Customers(services.store)
        await customers.unlink(customer_id, parsed, by=principal_of(request).actor, reason=reason)
        return await customers.view(customer_id)


class IncidentsController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["incidents"]

    def _incidents(self, services: Services) -> Incidents:
        s = services.settings
        return Incidents(services.store, s.incident_window_minutes, s.incident_min_customers)

    @documented(ok=IncidentPage, problems=(400,))
    @get(paths.INCIDENTS, operation_id="listIncidents", opt={"roles": STAFF},
         summary="Incidents, newest first: many customers reporting one fault")
    async def index(self, services: Services,
                    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50) -> dict[str, Any]:
        return {"items": [_view(i) for i in await self._incidents(services).list(limit)], "next": None}

    @documented(ok=Incident)
    @get(paths.INCIDENT, operation_id="getIncident", opt={"roles": STAFF},
         summary="An incident with its complaints")
    async def show(self, services: Services,
                   incident_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        incidents = self._incidents(services)
        incident = await incidents.get(incident_id)
        if incident is None:
            raise NotFound("incident_not_found", f"no incident {incident_id}")
        complaints = await services.store.get_many(await incidents.members(incident_id))
        view = _view(incident)
        view["complaints"] = [{"id": c.id, "case_number": c.case_number, "status": c.status.value,
                               "channel": c.channel, "customer_id": c.customer_id, "language": c.language,
                               "created_at": c.created_at.isoformat()} for c in complaints]
        view["complaint_count"] = len(complaints)
        return view

    @documented(AnswerIn, Incident,
                example={"zh": "支付通道故障已修复，重复扣款将原路退回。",
                         "en": "The payment fault is fixed; duplicate charges are refunded."})
    @post(paths.INCIDENT_ANSWER, operation_id="answerIncident", status_code=200, opt={"roles": {ROLE_SUPERVISOR}},
          summary="Answer every complaint of the incident at once (and every one that joins later)")
    async def answer(self, request: Request[Any, Any, Any], services: Services,
                     incident_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 64 * 1024), AnswerIn)
        try:
            texts = {lang: clean_text(t, services.settings.max_text_chars, lang)
                     for lang, t in (("zh", incoming.zh), ("en", incoming.en)) if t.strip()}
        except InputRejected as exc:
            raise ProblemError(422, exc.code, str(exc), field=exc.field) from None
        if not texts:
            raise ProblemError(422, "text_missing", "Give the answer in zh, en or both.", field="zh")
        incidents = self._incidents(services)
        incident = await incidents.get(incident_id)
        if incident is None:
            raise NotFound("incident_not_found", f"no incident {incident_id}")
        answered, skipped = await cases.answer_incident(services.store, incidents, incident, texts,
                                                        principal_of(request).actor)
        return {**_view(incident), "answered": answered, "skipped": skipped}

    @documented(ok=Incident)
    @post(paths.INCIDENT_CLOSE, operation_id="closeIncident", status_code=200, opt={"roles": {ROLE_SUPERVISOR}},
          summary="Close an incident: new reports of the fault no longer join it")
    async def close(self, services: Services,
                    incident_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        incidents = self._incidents(services)
        if await incidents.get(incident_id) is None:
            raise NotFound("incident_not_found", f"no incident {incident_id}")
        await incidents.close(incident_id)
        return _view(await incidents.get(incident_id) or {})


def _view(incident: dict[str, Any]) -> dict[str, Any]:
    view = dict(incident)
    view.pop("sample_tokens", None)
    return view
