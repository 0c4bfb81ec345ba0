"""The operations API, the categoriser (issue 19): its versions, a candidate trained with the
desk's corrections and evaluated against the current version, a dry run over recent complaints,
promotion and rollback (with a reason, recorded), and the corrections themselves (made by
``PATCH /v1/complaints/{id}``). Mounted by gateway/app.py; the models directory is
``GATEWAY_MODELS_DIR`` (``settings.models_path``).

Training runs in a thread (router/understanding/registry.py), never on the event loop; one at a
time per desk (409 ``training_in_progress``). The training data is data/corpus/train_*.jsonl
unless the app's state names another glob (``app.state.model_training_glob``).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter, SkipValidation

from gateway.api_doc import documented
from gateway.api_types_ops import CorrectionPage, ModelDryRun, ModelOverview, ModelSwitch, ModelVersion
from gateway.auth import ROLE_AGENT, ROLE_SUPERVISOR, principal_of, roles_guard
from plugins.contract import GatewayServices
from plugins.problems import ProblemError
from plugins.requests import decode_json, read_body, require_json
from router.understanding import corpus
from router.understanding.corrections import complaint_text, list_corrections
from router.understanding.registry import ModelRegistry, Recent, RegistryError, check_version_name

MODEL = "/v1/model"
MODEL_VERSIONS = "/v1/model/versions"
MODEL_DRY_RUN = "/v1/model/versions/{version:str}/dry-run"
MODEL_PROMOTE = "/v1/model/promote"
MODEL_ROLLBACK = "/v1/model/rollback"
MODEL_CORRECTIONS = "/v1/model/corrections"

STAFF = {ROLE_AGENT, ROLE_SUPERVISOR}
SUPERVISORS = {ROLE_SUPERVISOR}
#: Injected by the app (see create_app); not validated, it is our own object.
Services = NamedDependency[SkipValidation[GatewayServices]]
DRY_RUN_MAX = 5000
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class PromoteIn(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}$")]
    reason: Reason


class ModelRollbackIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason


class ModelDryRunIn(msgspec.Struct, forbid_unknown_fields=True):
    #: The last ``limit`` complaints, or those of the last ``since_minutes`` (whichever is given).
    limit: Annotated[int, msgspec.Meta(ge=1, le=DRY_RUN_MAX)] = 500
    since_minutes: Annotated[int, msgspec.Meta(ge=1, le=525_600)] | None = None
    examples: Annotated[int, msgspec.Meta(ge=0, le=50)] = 5


def registry_of(services: Any) -> ModelRegistry:
    return ModelRegistry(services.store.r, services.store.keys, services.settings.models_path)


def _problem(exc: RegistryError) -> ProblemError:
    return ProblemError(exc.status, exc.code, str(exc))


async def recent_complaints(store: Any, *, limit: int, since_minutes: int | None) -> list[Recent]:
    """The last ``limit`` complaints (or those of the last ``since_minutes``), as a dry run takes them."""
    from normalizer.ids import now_ms

    if since_minutes is not None:
        ids = await store.r.zrevrangebyscore(store.keys.idx_all, "+inf", now_ms() - since_minutes * 60_000,
                                             start=0, num=DRY_RUN_MAX)
    else:
        ids = await store.r.zrevrange(store.keys.idx_all, 0, limit - 1)
    complaints = await store.get_many([i.decode() for i in ids])
    return [Recent(c.id, complaint_text(c), c.category, c.case_number) for c in complaints]


class ModelController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["model"]

    @documented(ok=ModelOverview)
    @get(MODEL, operation_id="getModel", opt={"roles": STAFF},
         summary="The categoriser: the current version and its figures, every version, the history")
    async def show(self, services: Services) -> dict[str, Any]:
        return await registry_of(services).overview()

    @documented(ok=ModelVersion, problems=(409, 422))
    @post(MODEL_VERSIONS, operation_id="trainModelVersion", status_code=201, opt={"roles": SUPERVISORS},
          summary="Train a candidate on the corpus and the desk's corrections; its evaluation against the current one")
    async def train(self, request: Request[Any, Any, Any], services: Services) -> dict[str, Any]:
        from router.understanding.artefacts import ModelError

        data_glob = getattr(request.app.state, "model_training_glob", None) or corpus.DEFAULT_GLOB
        try:
            return await registry_of(services).train_candidate(data_glob=data_glob, by=principal_of(request).actor)
        except RegistryError as exc:
            raise _problem(exc) from None
        except (ModelError, ValueError) as exc:
            raise ProblemError(422, "training_failed", str(exc)) from None

    @documented(ModelDryRunIn, ModelDryRun, body_required=False, example={"limit": 500, "examples": 5})
    @post(MODEL_DRY_RUN, operation_id="dryRunModelVersion", status_code=200, opt={"roles": SUPERVISORS},
          summary="How a version would categorise recent complaints: how many would change, from -> to, examples")
    async def dry_run(self, request: Request[Any, Any, Any], services: Services,
                      version: Annotated[str, PathParameter(max_length=64)]) -> dict[str, Any]:
        body = await read_body(request, 16 * 1024)
        if body.strip():
            require_json(request)
            incoming = decode_json(body, ModelDryRunIn)
        else:
            incoming = ModelDryRunIn()
        registry = registry_of(services)
        try:
            check_version_name(version)
            if await registry.version_info(version) is None:
                raise ProblemError(404, "version_not_found", f"No version {version}.")
            recent = await recent_complaints(services.store, limit=incoming.limit, since_minutes=incoming.since_minutes)
            return await registry.dry_run(version, recent, examples=incoming.examples)
        except RegistryError as exc:
            raise _problem(exc) from None

    @documented(PromoteIn, ModelSwitch, problems=(409,),
                example={"version": "3f9c2a7b1d4e5f60", "reason": "Better on the desk's corrections"})
    @post(MODEL_PROMOTE, operation_id="promoteModelVersion", status_code=200, opt={"roles": SUPERVISORS},
          summary="Make a trained version current (workers follow within a quarter of a second)")
    async def promote(self, request: Request[Any, Any, Any], services: Services) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), PromoteIn)
        try:
            return await registry_of(services).promote(incoming.version, by=principal_of(request).actor,
                                                       reason=incoming.reason)
        except RegistryError as exc:
            raise _problem(exc) from None
        except ValueError as exc:
            raise ProblemError(422, "invalid_request", str(exc), field="reason") from None

    @documented(ModelRollbackIn, ModelSwitch, problems=(409,),
                example={"reason": "The new version confuses refunds with transfers"})
    @post(MODEL_ROLLBACK, operation_id="rollbackModel", status_code=200, opt={"roles": SUPERVISORS},
          summary="Back to the version current before the last promotion")
    async def rollback(self, request: Request[Any, Any, Any], services: Services) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), ModelRollbackIn)
        try:
            return await registry_of(services).rollback(by=principal_of(request).actor, reason=incoming.reason)
        except RegistryError as exc:
            raise _problem(exc) from None
        except ValueError as exc:
            raise ProblemError(422, "invalid_request", str(exc), field="reason") from None

    @documented(ok=CorrectionPage, problems=(400,))
    @get(MODEL_CORRECTIONS, operation_id="listCorrections", opt={"roles": STAFF},
         summary="The desk's category corrections, newest first (personal data masked)")
    async def corrections(
        self,
        services: Services,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, QueryParameter(name="next", pattern=r"^[0-9]{1,9}$")] = None,
    ) -> dict[str, Any]:
        offset = int(cursor) if cursor else 0
        items, total = await list_corrections(services.store.r, services.store.keys, limit=limit, offset=offset)
        more = offset + limit < total
        return {"items": [c.view() for c in items], "next": str(offset + limit) if more else None, "total": total}


__all__ = ["ModelController", "recent_complaints", "registry_of"]
