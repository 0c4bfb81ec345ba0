"""What the operations API's modules share: who counts as staff, the injected services, the
contact kinds a request may name, and finding a complaint by id or case number."""

from __future__ import annotations

from litestar.di import NamedDependency
from litestar.params import SkipValidation

from gateway.auth import ROLE_AGENT, ROLE_SUPERVISOR
from normalizer.contacts import KINDS as CONTACT_KINDS
from normalizer.schema import Complaint
from plugins.contract import GatewayServices

STAFF = {ROLE_AGENT, ROLE_SUPERVISOR}
#: Injected by the app (see create_app); not validated, it is our own object.
Services = NamedDependency[SkipValidation[GatewayServices]]
#: The contact kinds a request may name (a pattern for msgspec.Meta).
CONTACT_KINDS_PATTERN = "^(" + "|".join((*CONTACT_KINDS, "id_card_last4", "other")) + ")$"


async def load_complaint(services: GatewayServices, ref: str) -> Complaint:
    """A complaint by its id or its case number (``C-…``); ``NotFound`` (404) otherwise."""
    if ref.startswith("C-"):
        return await services.store.find_by_case_number(ref)
    return await services.store.get(ref)


__all__ = ["CONTACT_KINDS_PATTERN", "STAFF", "Services", "load_complaint"]
