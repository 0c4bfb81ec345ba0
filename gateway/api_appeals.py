"""The appeal steps agents take over HTTP: asking the customer for materials, ticking an item
off or waiving it by hand, and seeing what is still missing. HTTP only: the changes are
``router.cases.materials``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import PathParameter

from gateway import paths
from gateway.api_common import STAFF, Services, load_complaint
from gateway.api_doc import documented
from gateway.api_types_ops import Materials, MaterialsChanged
from gateway.auth import ROLE_AGENT, principal_of, roles_guard
from gateway.views import complaint_json
from normalizer.inbound import InputRejected, clean_text
from normalizer.schema import MATERIAL_KINDS, Complaint
from plugins.problems import ProblemError
from plugins.requests import decode_json, read_body, require_json
from router import cases

_KIND = "^(" + "|".join(MATERIAL_KINDS) + ")$"


class MaterialItemIn(msgspec.Struct, forbid_unknown_fields=True):
    #: One of the catalogue: transaction_record, charge_screenshot, bank_statement, id_proof,
    #: communication_records, other (``note`` says what).
    kind: Annotated[str, msgspec.Meta(pattern=_KIND)]
    note: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class MaterialsIn(msgspec.Struct, forbid_unknown_fields=True):
    """What an agent asks the customer for; ``message``: extra words after the list."""

    items: Annotated[list[MaterialItemIn], msgspec.Meta(min_length=1, max_length=10)]
    message: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class MaterialMarkIn(msgspec.Struct, forbid_unknown_fields=True):
    """An item ticked off by hand (``received``, with the evidence that brought it) or waived."""

    state: Literal["received", "waived"]
    evidence_ids: Annotated[list[Annotated[str, msgspec.Meta(max_length=80)]], msgspec.Meta(max_length=20)] = []


def materials_view(complaint: Complaint) -> dict[str, Any]:
    return {"items": msgspec.to_builtins(complaint.materials), "missing": list(complaint.materials_missing),
            "stage": complaint.stage, "resolution_due": complaint.resolution_due.isoformat()
            if complaint.resolution_due else None}


class AppealsController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["appeals"]

    @documented(MaterialsIn, MaterialsChanged, problems=(409,),
                example={"items": [{"kind": "transaction_record"}, {"kind": "bank_statement", "note": "March"}],
                         "message": "A photo is fine."})
    @post(paths.COMPLAINT_MATERIALS, operation_id="requestMaterials", status_code=201, opt={"roles": STAFF},
          summary="Ask the customer for appeal materials (the resolution clock pauses until they arrive); "
                  "an Idempotency-Key header makes a retry ask nothing twice")
    async def request_materials(self, request: Request[Any, Any, Any], services: Services,
                                complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 64 * 1024), MaterialsIn)
        try:
            message = clean_text(incoming.message, services.settings.max_text_chars) if incoming.message else None
        except InputRejected as exc:
            raise ProblemError(422, exc.code, str(exc), field="message") from None
        principal = principal_of(request)
        cid = (await load_complaint(services, complaint_id)).id
        try:
            complaint = await cases.request_materials(
                services.store, cid, items=[(i.kind, i.note) for i in incoming.items], message=message or None,
                actor=principal.actor, agent=principal.id, claim_binds=principal.role == ROLE_AGENT,
                key=(request.headers.get("idempotency-key") or "")[:64] or None)
        except cases.MaterialsError as exc:
            raise ProblemError(422, exc.code, str(exc), field=exc.field) from None
        return {"materials": materials_view(complaint), "complaint": complaint_json(complaint)}

    @documented(ok=Materials)
    @get(paths.COMPLAINT_MATERIALS, operation_id="listMaterials", opt={"roles": STAFF},
         summary="The materials asked for, which arrived (with their evidence), which are still missing")
    async def list_materials(self, services: Services,
                             complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        return materials_view(await load_complaint(services, complaint_id))

    @documented(MaterialMarkIn, MaterialsChanged, problems=(409,),
                example={"state": "received", "evidence_ids": ["ev_01HZX5Y2"]})
    @post(paths.COMPLAINT_MATERIAL, operation_id="markMaterial", status_code=200, opt={"roles": STAFF},
          summary="Tick a material off by hand (received, naming its evidence) or waive it")
    async def mark_material(self, request: Request[Any, Any, Any], services: Services,
                            complaint_id: Annotated[str, PathParameter(max_length=80)],
                            material_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), MaterialMarkIn)
        cid = (await load_complaint(services, complaint_id)).id
        try:
            complaint = await cases.mark_material(services.store, cid, material_id, state=incoming.state,
                                                  evidence_ids=incoming.evidence_ids,
                                                  actor=principal_of(request).actor)
        except cases.MaterialsError as exc:
            raise ProblemError(422, exc.code, str(exc), field=exc.field) from None
        return {"materials": materials_view(complaint), "complaint": complaint_json(complaint)}


__all__ = ["AppealsController", "MaterialItemIn", "MaterialMarkIn", "MaterialsIn", "materials_view"]
