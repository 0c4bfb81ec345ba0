"""The console: its files (``GET /console`` and ``/console/<file>``, plain HTML, JS and CSS, no build
step), and the few calls only a desk screen needs, under ``/v1/console``: who am I and what may I
work, my worklist, a cheap "has this case changed" pulse (the open case refreshes within a second
of a new message without re-reading it every time), holding a claimed case longer, releasing it or
handing it back, and the supervisors' charts.

Everything else the console shows comes from the same /v1 API any desk tool would use.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import PathParameter, QueryParameter

from gateway import paths
from gateway.api_common import STAFF, Services, load_complaint
from gateway.api_doc import documented
from gateway.api_routing import skills_of
from gateway.api_types import ComplaintOut
from gateway.api_types_ops import Charts, Me, Pulse, Trend, Worklist
from gateway.auth import ROLE_AGENT, ROLE_SUPERVISOR, principal_of, roles_guard
from gateway.console_figures import charts, desk_timezone, first_response_standard, trend
from gateway.views import complaint_json
from normalizer.categories import CATEGORY_NAMES
from normalizer.ids import dt_to_ms, now_ms
from normalizer.schema import ComplaintStatus
from normalizer.status import STATUS_WORDS
from plugins.problems import ProblemError
from plugins.requests import decode_json, read_body
from router.cases.leases import extend_lease, release_lease
from router.cases.reopening import reopen_case
from router.rulestore import RuleStore
from router.store import ComplaintStore
from router.timers import load_policy

#: The console's own paths (beside paths.CONSOLE, the page).
CONSOLE_ASSET = paths.CONSOLE + "/{asset:str}"
ME = "/v1/console/me"
WORKLIST = "/v1/console/worklist"
PULSE = "/v1/console/pulse"
LEASE_EXTEND = "/v1/console/cases/{complaint_id:str}/lease/extend"
LEASE_RELEASE = "/v1/console/cases/{complaint_id:str}/lease/release"
LEASE_HAND_BACK = "/v1/console/cases/{complaint_id:str}/lease/hand-back"
REOPEN = "/v1/console/cases/{complaint_id:str}/reopen"
CHARTS = "/v1/console/charts"
TREND = "/v1/console/trend"

CONSOLE_DIR = Path(__file__).parent / "console"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
#: Scripts only from the console's own files; evidence is shown from blob: URLs the page makes
#: from authorised fetches (an <img src> cannot carry the agent's token).
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self' blob:; object-src 'none'; "
                               "frame-src blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY", "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
#: Waiting cases listed as "due soonest", across the agent's queues.
DUE_LIST = 12
WAITING = frozenset({ComplaintStatus.received, ComplaintStatus.accepted, ComplaintStatus.reopened})
#: How many of the newest complaints a chart or a trend reads at most.
CHART_LIMIT = 5000
TREND_LIMIT = 20_000
#: A chart also reads complaints opened this long before its window (still waiting, breaching).
CHART_LOOKBACK = timedelta(hours=24)


def _console_files() -> dict[str, tuple[bytes, str]]:
    """The console's files, read once at start-up (only these names are served)."""
    return {p.name: (p.read_bytes(), _TYPES[p.suffix]) for p in sorted(CONSOLE_DIR.iterdir())
            if p.is_file() and p.suffix in _TYPES}


def console_handlers() -> list[Any]:
    files = _console_files()

    @get(paths.CONSOLE, operation_id="console", media_type="text/html", include_in_schema=False)
    async def console() -> Response[bytes]:
        """The desk's console for agents and supervisors: the page itself holds no data; every
        figure comes from /v1 with the signed-in person's token."""
        return Response(files["index.html"][0], media_type=files["index.html"][1], headers=HEADERS)

    @get(CONSOLE_ASSET, operation_id="consoleAsset", include_in_schema=False)
    async def asset(asset: Annotated[str, PathParameter(max_length=64)]) -> Response[bytes]:
        found = files.get(asset)
        if found is None:
            raise ProblemError(404, "not_found", "No such console file.")
        return Response(found[0], media_type=found[1], headers=HEADERS)

    return [console, asset]


class LeaseIn(msgspec.Struct, forbid_unknown_fields=True):
    """Why (a hand-back, a reopening)."""

    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


def _waiting_view(c: Any) -> dict[str, Any]:
    return {"id": c.id, "case_number": c.case_number, "status": c.status.value, "category": c.category,
            "channel": c.channel, "skill": c.skill, "priority": c.priority, "language": c.language,
            "formal_complaint": c.formal_complaint, "repeat_count": c.repeat_count,
            "created_at": c.created_at.isoformat(), "assignee": c.assignee, "tags": c.tags,
            "first_response_due": c.first_response_due.isoformat() if c.first_response_due else None,
            "resolution_due": c.resolution_due.isoformat() if c.resolution_due else None,
            "lease_expires_at": c.lease_expires_at.isoformat() if c.lease_expires_at else None,
            "stage": getattr(c, "stage", None)}


async def _agent_queues(services: Any, principal: Any) -> list[str]:
    """The queues a person works: an agent's skills (all queues when none are set)."""
    store: ComplaintStore = services.store
    active = await RuleStore(store.r, store.keys).active()
    escalation = (await load_policy(store)).escalation_queue
    everything = sorted({*active.rules.queues, escalation, *[s.decode() for s in await store.r.smembers(store.keys.skills)]})
    if principal.role != ROLE_AGENT:
        return everything
    skills = await skills_of(store, principal.id)
    return everything if skills is None else skills


async def _held_by(store: ComplaintStore, agent: str) -> list[str]:
    """The cases whose claim lease the agent holds now."""
    leased = [c.decode() for c in await store.r.zrange(store.keys.leases, 0, 499)]
    if not leased:
        return []
    async with store.r.pipeline(transaction=False) as pipe:
        for cid in leased:
            pipe.hget(store.keys.lease(cid), "agent")
        holders = await pipe.execute()
    return [cid for cid, holder in zip(leased, holders) if holder is not None and holder.decode() == agent]


class ConsoleController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["console"]

    @documented(ok=Me)
    @get(ME, operation_id="consoleMe", opt={"roles": STAFF},
         summary="Who the token is, the queues they work, and the desk's words and time zone")
    async def me(self, request: Request[Any, Any, Any], services: Services) -> dict[str, Any]:
        principal = principal_of(request)
        policy = await load_policy(services.store)
        return {"role": principal.role, "id": principal.id, "actor": principal.actor,
                "queues": await _agent_queues(services, principal), "timezone": desk_timezone(policy),
                "claim_lease_seconds": services.settings.claim_lease_seconds,
                "categories": CATEGORY_NAMES,
                "statuses": {k: {"zh": zh, "en": en} for k, (zh, en) in STATUS_WORDS.items()},
                "first_response_standard_seconds": {
                    ch: first_response_standard(policy, ch) for ch in policy.first_response_seconds},
                "escalation_queue": policy.escalation_queue}

    @documented(ok=Worklist)
    @get(WORKLIST, operation_id="consoleWorklist", opt={"roles": STAFF},
         summary="My queues, the waiting cases due soonest across them, and the cases I hold")
    async def worklist(self, request: Request[Any, Any, Any], services: Services) -> dict[str, Any]:
        principal = principal_of(request)
        store: ComplaintStore = services.store
        queues = await _agent_queues(services, principal)
        stats = [q for q in await store.queue_stats(extra=queues) if q["skill"] in queues]
        async with store.r.pipeline(transaction=False) as pipe:
            for skill in queues:  # each queue's next cases, and its first responses due soonest
                pipe.zrange(store.keys.queue(skill), 0, DUE_LIST - 1)
                pipe.zrange(store.keys.fr_due(skill), 0, DUE_LIST - 1)
            heads = await pipe.execute()
        candidates = await store.get_many(sorted({c.decode() for head in heads for c in head}))
        waiting = [c for c in candidates if c.status in WAITING]
        far = datetime.max.replace(tzinfo=timezone.utc)
        waiting.sort(key=lambda c: (c.first_response_due or c.resolution_due or far, -c.priority, c.created_at))
        held = await store.get_many(await _held_by(store, principal.id))
        return {"queues": stats, "due": [_waiting_view(c) for c in waiting[:DUE_LIST]],
                "mine": [_waiting_view(c) for c in sorted(held, key=lambda c: c.lease_expires_at or far)],
                "at": datetime.now(timezone.utc).isoformat()}

    @documented(ok=Pulse, problems=(400, 404))
    @get(PULSE, operation_id="consolePulse", opt={"roles": STAFF},
         summary="A fingerprint of a case (changes whenever anything on it does), for a cheap poll")
    async def pulse(self, services: Services,
                    case: Annotated[str, QueryParameter(max_length=80)]) -> dict[str, Any]:
        store: ComplaintStore = services.store
        cid = case if not case.startswith("C-") else (await load_complaint(services, case)).id
        async with store.r.pipeline(transaction=False) as pipe:
            pipe.get(store.keys.complaint(cid))
            pipe.hgetall(store.keys.delivery(cid))
            data, deliveries = await pipe.execute()
        if data is None:
            raise ProblemError(404, "complaint_not_found", "No such complaint.")
        digest = hashlib.sha1(data, usedforsecurity=False)
        for field, value in sorted(deliveries.items()):
            digest.update(field + b"=" + value + b";")
        return {"id": cid, "version": digest.hexdigest()[:20], "at_ms": now_ms()}

    @documented(ok=ComplaintOut, problems=(409,))
    @post(LEASE_EXTEND, operation_id="consoleExtendLease", status_code=200, opt={"roles": STAFF},
          summary="Hold the case I claimed longer (one more lease period from now)")
    async def extend(self, request: Request[Any, Any, Any], services: Services,
                     complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        principal = principal_of(request)
        cid = (await load_complaint(services, complaint_id)).id
        complaint = await extend_lease(services.store, cid, agent=principal.id, actor=principal.actor,
                                       lease_seconds=services.settings.claim_lease_seconds)
        return complaint_json(complaint)

    @documented(LeaseIn, ComplaintOut, body_required=False, problems=(409,), example={"reason": ""})
    @post(LEASE_RELEASE, operation_id="consoleReleaseLease", status_code=200, opt={"roles": STAFF},
          summary="Put the case I claimed back in its queue, at its place")
    async def release(self, request: Request[Any, Any, Any], services: Services,
                      complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        return await self._let_go(request, services, complaint_id, hand_back=False)

    @documented(LeaseIn, ComplaintOut, problems=(409,), example={"reason": "Needs a Cantonese speaker"})
    @post(LEASE_HAND_BACK, operation_id="consoleHandBack", status_code=200, opt={"roles": STAFF},
          summary="Hand the case back to its queue with a reason (tagged handed_back for supervisors)")
    async def hand_back(self, request: Request[Any, Any, Any], services: Services,
                        complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        return await self._let_go(request, services, complaint_id, hand_back=True)

    async def _let_go(self, request: Request[Any, Any, Any], services: Services, complaint_id: str, *,
                      hand_back: bool) -> dict[str, Any]:
        body = await read_body(request, 16 * 1024)
        incoming = decode_json(body, LeaseIn) if body.strip() else LeaseIn()
        if hand_back and not incoming.reason.strip():
            raise ProblemError(422, "reason_required", "Say why you hand the case back.", field="reason")
        principal = principal_of(request)
        cid = (await load_complaint(services, complaint_id)).id
        complaint = await release_lease(services.store, cid, agent=principal.id, actor=principal.actor,
                                        reason=incoming.reason, hand_back=hand_back)
        return complaint_json(complaint)

    @documented(LeaseIn, ComplaintOut, problems=(409,), example={"reason": "The refund never arrived"})
    @post(REOPEN, operation_id="consoleReopen", status_code=200, opt={"roles": STAFF},
          summary="Reopen a resolved case (with a reason): back in its queue with fresh clocks, the customer told")
    async def reopen(self, request: Request[Any, Any, Any], services: Services,
                     complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        incoming = decode_json(await read_body(request, 16 * 1024), LeaseIn)
        if not incoming.reason.strip():
            raise ProblemError(422, "reason_required", "Say why the case is reopened.", field="reason")
        principal = principal_of(request)
        cid = (await load_complaint(services, complaint_id)).id
        complaint = await reopen_case(services.store, cid, actor=principal.actor, reason=incoming.reason,
                                      policy=await load_policy(services.store))
        return complaint_json(complaint)

    @documented(ok=Charts, problems=(400,))
    @get(CHARTS, operation_id="consoleCharts", opt={"roles": {ROLE_SUPERVISOR}},
         summary="Queue depth, first-response times against the standard and breaches, per step, per queue and channel")
    async def charts(self, services: Services,
                     hours: Annotated[int, QueryParameter(ge=1, le=72)] = 6,
                     step_minutes: Annotated[int | None, QueryParameter(ge=1, le=240)] = None) -> dict[str, Any]:
        store: ComplaintStore = services.store
        until = datetime.now(timezone.utc)
        since = until - timedelta(hours=hours)
        step = timedelta(minutes=step_minutes or max(1, hours * 60 // 36))
        if (until - since) / step > 1440:
            raise ProblemError(422, "too_many_points", "At most 1440 points: a longer step, or fewer hours.",
                               field="step_minutes")
        opened_after = dt_to_ms(since - CHART_LOOKBACK)
        ids = await store.r.zrevrangebyscore(store.keys.idx_all, "+inf", opened_after, start=0, num=CHART_LIMIT)
        complaints = await store.get_many([i.decode() for i in ids])
        policy = await load_policy(store)
        figures = charts(complaints, policy, since=since, until=until, step=step)
        figures["timezone"] = desk_timezone(policy)
        figures["truncated"] = len(ids) >= CHART_LIMIT
        figures["now"] = {q["skill"]: q for q in await store.queue_stats()}
        return figures

    @documented(ok=Trend, problems=(400,))
    @get(TREND, operation_id="consoleTrend", opt={"roles": {ROLE_SUPERVISOR}},
         summary="The service report's figures by day (the desk's time zone)")
    async def trend(self, services: Services,
                    days: Annotated[int, QueryParameter(ge=1, le=92)] = 14) -> dict[str, Any]:
        store: ComplaintStore = services.store
        now = datetime.now(timezone.utc)
        opened_after = dt_to_ms(now - timedelta(days=days + 1))
        ids = [i.decode() for i in await store.r.zrevrangebyscore(store.keys.idx_all, "+inf", opened_after,
                                                                  start=0, num=TREND_LIMIT)]
        complaints = []
        for lo in range(0, len(ids), 500):
            complaints += await store.get_many(ids[lo:lo + 500])
        figures = trend(complaints, await load_policy(store), days=days, today=now)
        figures["truncated"] = len(ids) >= TREND_LIMIT
        return figures


__all__ = ["ConsoleController", "console_handlers"]
