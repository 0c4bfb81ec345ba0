"""The operations API, part three: service standards — the deadline policy, the customer-facing
templates, and the service report against the seed standards."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, put
from litestar.params import QueryParameter

from gateway import paths
from gateway.api_common import STAFF, Services
from gateway.api_doc import documented
from gateway.api_types_ops import ServiceReport, Templates
from gateway.auth import ROLE_SUPERVISOR, principal_of, roles_guard
from plugins.problems import ProblemError
from plugins.requests import decode_json, read_body, require_json
from normalizer.ids import dt_to_ms
from normalizer.schema import ROOT_CAUSES
from router.cases.outcomes import AWAITING
from router import templates
from router.deadlines import DeadlinePolicy
from router.timers import load_policy

STANDARDS = {"resolution_rate": 0.95, "satisfaction": 0.90, "first_response_seconds": {"online": 60, "phone": 30}}
PHONE_CHANNELS = {"phone", "twilio_voice"}
REPORT_LIMIT = 100_000
#: A resolved case whose root cause nobody recorded.
NOT_RECORDED = "not_recorded"


class TemplatesIn(msgspec.Struct, forbid_unknown_fields=True):
    """``{"ack": {"zh": "…{case}…", "en": "…"}, ...}``; an empty text restores the default."""

    templates: dict[str, dict[str, str]]


class PolicyController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["service standards"]

    @documented(ok=DeadlinePolicy)
    @get(paths.DEADLINE_POLICY, operation_id="getDeadlinePolicy", opt={"roles": STAFF},
         summary="The deadline policy in force (defaults: the seed standards)")
    async def get_policy(self, services: Services) -> dict[str, Any]:
        return msgspec.to_builtins(await load_policy(services.store))

    @documented(DeadlinePolicy, DeadlinePolicy, example={"resolution_seconds": 172800, "warn_fraction": 0.8})
    @put(paths.DEADLINE_POLICY, operation_id="putDeadlinePolicy", opt={"roles": {ROLE_SUPERVISOR}},
         summary="Replace the deadline policy (applies to complaints opened from now on)")
    async def put_policy(self, request: Request[Any, Any, Any], services: Services) -> dict[str, Any]:
        require_json(request)
        policy = decode_json(await read_body(request, 64 * 1024), DeadlinePolicy)
        problems = policy.validate()
        if problems:
            raise ProblemError(422, "invalid_policy", "; ".join(problems))
        store = services.store
        await store.r.set(store.keys.deadline_policy, msgspec.json.encode(policy))
        await store.r.rpush(store.keys.deadline_policy_history, msgspec.json.encode({
            "at": datetime.now(timezone.utc).isoformat(), "by": principal_of(request).actor}))
        return msgspec.to_builtins(policy)

    @documented(ok=Templates)
    @get(paths.TEMPLATES, operation_id="getTemplates", opt={"roles": STAFF},
         summary="What the desk says to customers, per template and language")
    async def get_templates(self, services: Services) -> dict[str, Any]:
        await templates.refresh(services.store.r, services.store.keys, force=True)
        return {"templates": templates.all_templates()}

    @documented(TemplatesIn, Templates, example={"templates": {"ack": {"en": "We have your complaint {case}."}}})
    @put(paths.TEMPLATES, operation_id="putTemplates", opt={"roles": {ROLE_SUPERVISOR}},
         summary="Change templates (each keeps its placeholders; empty text = back to the default)")
    async def put_templates(self, request: Request[Any, Any, Any], services: Services) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 128 * 1024), TemplatesIn)
        changes: dict[str, str] = {}
        removals: list[str] = []
        problems = []
        for name, texts in incoming.templates.items():
            for lang, text in texts.items():
                if not text.strip():
                    removals.append(f"{name}.{lang}")
                    continue
                try:
                    templates.validate(name, lang, text)
                except templates.TemplateError as exc:
                    problems.append(str(exc))
                changes[f"{name}.{lang}"] = text.strip()
        if problems:
            raise ProblemError(422, "invalid_template", "; ".join(problems), field="templates")
        key = services.store.keys.templates
        async with services.store.r.pipeline(transaction=True) as pipe:
            if changes:
                pipe.hset(key, mapping=changes)
            if removals:
                pipe.hdel(key, *removals)
            await pipe.execute()
        await templates.refresh(services.store.r, services.store.keys, force=True)
        return {"templates": templates.all_templates()}


class ReportsController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["service standards"]

    @documented(ok=ServiceReport, problems=(400,))
    @get(paths.SERVICE_REPORT, operation_id="serviceReport", opt={"roles": STAFF},
         summary="Resolution rate, satisfaction, first-response times, breaches, root causes and refunds "
                 "per channel and category")
    async def service(self, services: Services,
                      days: Annotated[int, QueryParameter(ge=1, le=366)] = 30) -> dict[str, Any]:
        store = services.store
        until = datetime.now(timezone.utc)
        since = until - timedelta(days=days)
        ids = [i.decode() for i in await store.r.zrangebyscore(store.keys.idx_all, dt_to_ms(since), dt_to_ms(until),
                                                               start=0, num=REPORT_LIMIT)]
        groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for lo in range(0, len(ids), 500):
            for complaint in await store.get_many(ids[lo:lo + 500]):
                groups[("channel", complaint.channel)].append(complaint)
                groups[("category", complaint.category)].append(complaint)
                groups[("all", "all")].append(complaint)
        report = {"since": since.isoformat(), "until": until.isoformat(), "complaints": len(ids),
                  "truncated": len(ids) >= REPORT_LIMIT, "standards": STANDARDS,
                  "overall": _figures(groups.get(("all", "all"), []), None),
                  "by_channel": {k: _figures(v, k) for (kind, k), v in sorted(groups.items()) if kind == "channel"},
                  "by_category": {k: _figures(v, None) for (kind, k), v in sorted(groups.items())
                                  if kind == "category"}}
        overall = report["overall"]
        report["meets"] = {
            "resolution_rate": overall["resolution_rate"] is not None
            and overall["resolution_rate"] >= STANDARDS["resolution_rate"],
            "satisfaction": overall["satisfaction"] is not None and overall["satisfaction"] >= STANDARDS["satisfaction"],
            "first_response": overall["first_response_within_standard"] is not None
            and overall["first_response_within_standard"] >= 0.95,
        }
        return report


def _figures(complaints: list[Any], channel: str | None) -> dict[str, Any]:
    total = len(complaints)
    resolved = [c for c in complaints if c.status.value in ("resolved", "closed")]
    times, within = [], 0
    for c in complaints:
        if c.first_responded_at is not None:
            seconds = (c.first_responded_at - c.created_at).total_seconds()
            times.append(seconds)
            standard = STANDARDS["first_response_seconds"]["phone" if c.channel in PHONE_CHANNELS else "online"]
            within += seconds <= standard
    scores = [c.satisfaction for c in complaints if c.satisfaction is not None]
    breaches = sum(1 for c in complaints for d in c.deadlines if d.state == "breached")
    ordered = sorted(times)
    return {
        "complaints": total,
        "resolved": len(resolved),
        "resolution_rate": round(len(resolved) / total, 4) if total else None,
        "first_responses": len(times),
        "first_response_p50_seconds": round(statistics.median(ordered), 1) if ordered else None,
        "first_response_p90_seconds": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1)
        if ordered else None,
        "first_response_within_standard": round(within / len(times), 4) if times else None,
        "surveys_answered": len(scores),
        "satisfaction": round(sum(1 for s in scores if s >= 4) / len(scores), 4) if scores else None,
        "satisfaction_average": round(sum(scores) / len(scores), 2) if scores else None,
        "deadlines_breached": breaches,
        "reopened": sum(c.reopened_count for c in complaints),
        "root_causes": _root_causes(resolved),
        "refunds": _refunds(complaints),
    }


def _root_causes(resolved: list[Any]) -> dict[str, int]:
    """Why the resolved cases happened: each cause, and ``not_recorded`` for none given."""
    counts = dict.fromkeys((*ROOT_CAUSES, NOT_RECORDED), 0)
    for c in resolved:
        counts[c.root_cause if c.root_cause in counts else NOT_RECORDED] += 1
    return counts


def _refunds(complaints: list[Any]) -> dict[str, Any]:
    """Refunds and compensations approved (each approval in a case's history counts, with its sum per
    currency), those awaiting a supervisor's approval, and proposals rejected."""
    approved = {"refund": 0, "compensation": 0}
    sums: dict[str, Decimal] = defaultdict(Decimal)
    rejected = 0
    for c in complaints:
        for h in c.history:
            if h.action == "refund_approved":
                kind = h.detail.get("kind", "refund")
                approved[kind] = approved.get(kind, 0) + 1
                sums[h.detail.get("currency", "")] += Decimal(h.detail.get("amount", "0"))
            elif h.action == "refund_rejected":
                rejected += 1
    return {
        "approved": sum(approved.values()),
        "by_kind": approved,
        "sum": {currency: str(total) for currency, total in sorted(sums.items())},
        "awaiting_approval": sum(1 for c in complaints if c.stage == AWAITING),
        "rejected": rejected,
    }
