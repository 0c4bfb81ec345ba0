"""The operations API, part four: routing rules (versions, validation, optimistic concurrency,
history, rollback, dry run) and agents' skills."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.params import PathParameter

from gateway import paths
from gateway.api_common import STAFF, Services
from gateway.api_doc import documented
from gateway.api_types_ops import Agent, AgentPage, RulesDryRun, RulesHistory, RulesVersion
from gateway.auth import ROLE_SUPERVISOR, principal_of, roles_guard
from plugins.problems import ProblemError
from plugins.requests import decode_json, read_body, require_json
from router.store import ComplaintStore
from router.rules import Engine, RuleSet, StoredVersion, validate
from router.rulestore import InvalidRules, PreconditionFailed, RuleStore
from router.facts import facts_of_complaint
from router.timers import load_policy
from normalizer.ids import now_ms

DRY_RUN_MAX = 5000
EXAMPLES = 5
#: A rule set, as the document's examples show it.
RULES_EXAMPLE = {"queues": ["payments", "general"], "default": {"skill": "general"},
                 "rules": [{"id": "payments", "when": {"categories": ["payment_amount", "transaction"]},
                            "then": {"skill": "payments", "priority_boost": 1}}]}


class PutRulesIn(msgspec.Struct, forbid_unknown_fields=True):
    rules: RuleSet
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class RollbackIn(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=0)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class DryRunIn(msgspec.Struct, forbid_unknown_fields=True):
    rules: RuleSet
    #: The last ``limit`` complaints, or those of the last ``since_minutes`` (whichever is given).
    limit: Annotated[int, msgspec.Meta(ge=1, le=DRY_RUN_MAX)] = 500
    since_minutes: Annotated[int, msgspec.Meta(ge=1, le=525_600)] | None = None


class SkillsIn(msgspec.Struct, forbid_unknown_fields=True):
    skills: list[Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]]


def _version_view(stored: StoredVersion) -> dict[str, Any]:
    return {"version": stored.version, "rules": msgspec.to_builtins(stored.rules), "by": stored.by,
            "at": stored.at.isoformat(), "reason": stored.reason, "rollback_of": stored.rollback_of}


def _etag(version: int) -> str:
    return f'"{version}"'


def _if_match(request: Request[Any, Any, Any]) -> int:
    raw = request.headers.get("if-match")
    if not raw:
        raise ProblemError(428, "if_match_required", "Send If-Match with the version you edited (GET gives it as ETag).")
    try:
        return int(raw.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise ProblemError(412, "version_mismatch", f"If-Match {raw!r} is not a version this API gave out.") from None


def _invalid(exc: InvalidRules) -> ProblemError:
    return ProblemError(422, "invalid_rules", f"{len(exc.problems)} problem(s): {exc}",
                        extra={"problems": [p.as_dict() for p in exc.problems]})


async def dry_run(store: ComplaintStore, candidate: RuleSet, *, limit: int, since_minutes: int | None) -> dict[str, Any]:
    """What the candidate would do to recent complaints, changing nothing."""
    problems = validate(candidate)
    if problems:
        raise InvalidRules(problems)
    engine = Engine(candidate, -1)
    policy = await load_policy(store)
    if since_minutes is not None:
        ids = await store.r.zrevrangebyscore(store.keys.idx_all, "+inf", now_ms() - since_minutes * 60_000,
                                             start=0, num=DRY_RUN_MAX)
    else:
        ids = await store.r.zrevrange(store.keys.idx_all, 0, limit - 1)
    complaints = await store.get_many([i.decode() for i in ids])
    moves: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    by_rule: Counter[str] = Counter()
    for c in complaints:
        # the triage threshold replays too: the model's confidence as the case recorded it
        decided = engine.decide(facts_of_complaint(c, policy))
        by_rule[decided.rule] += 1
        source = c.skill or ""
        if decided.skill != source:
            moves[(source, decided.skill)] += 1
            if len(examples[(source, decided.skill)]) < EXAMPLES:
                examples[(source, decided.skill)].append({
                    "case_number": c.case_number, "category": c.category, "channel": c.channel,
                    "routed_by": c.routed_by, "rule": decided.rule})
    return {
        "examined": len(complaints),
        "would_move": sum(moves.values()),
        "unchanged": len(complaints) - sum(moves.values()),
        "moves": [{"from": a, "to": b, "count": n, "examples": examples[(a, b)]}
                  for (a, b), n in moves.most_common()],
        "by_rule": dict(by_rule.most_common()),
    }


class RoutingController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["routing"]

    @documented(ok=RulesVersion)
    @get(paths.ROUTING_RULES, operation_id="getRoutingRules", opt={"roles": STAFF},
         summary="The active rule set and its version (also as ETag)")
    async def show(self, services: Services) -> Response[dict[str, Any]]:
        stored = await RuleStore(services.store.r, services.store.keys).active()
        return Response(_version_view(stored), headers={"ETag": _etag(stored.version)})

    @documented(PutRulesIn, RulesVersion, problems=(412, 428),
                example={"rules": RULES_EXAMPLE, "reason": "Payment cases to the payments queue"})
    @put(paths.ROUTING_RULES, operation_id="putRoutingRules", opt={"roles": {ROLE_SUPERVISOR}},
         summary="A new version (If-Match: the version edited; 412 when someone saved first)")
    async def replace(self, request: Request[Any, Any, Any], services: Services) -> Response[dict[str, Any]]:
        require_json(request)
        expected = _if_match(request)
        incoming = decode_json(await read_body(request, 512 * 1024), PutRulesIn)
        try:
            stored = await RuleStore(services.store.r, services.store.keys).put(
                incoming.rules, expected=expected, by=principal_of(request).actor, reason=incoming.reason)
        except InvalidRules as exc:
            raise _invalid(exc) from None
        except PreconditionFailed as exc:
            raise ProblemError(412, "version_mismatch", f"Version {exc.current} is active now; you edited "
                               f"{expected}. Reload, reapply your change, and save again.",
                               extra={"active_version": exc.current}) from None
        return Response(_version_view(stored), headers={"ETag": _etag(stored.version)})

    @documented(ok=RulesHistory)
    @get(paths.ROUTING_HISTORY, operation_id="routingRulesHistory", opt={"roles": STAFF},
         summary="Every version: who, when, why, and what changed")
    async def history(self, services: Services) -> dict[str, Any]:
        return {"items": await RuleStore(services.store.r, services.store.keys).history(), "next": None}

    @documented(ok=RulesVersion, problems=(400,))
    @get(paths.ROUTING_VERSION, operation_id="getRoutingRulesVersion", opt={"roles": STAFF},
         summary="One version of the rules")
    async def version(self, services: Services,
                      version: Annotated[int, PathParameter(ge=0)]) -> dict[str, Any]:
        stored = await RuleStore(services.store.r, services.store.keys).get(version)
        if stored is None:
            raise ProblemError(404, "version_not_found", f"No version {version}.")
        return _version_view(stored)

    @documented(RollbackIn, RulesVersion, problems=(412,),
                example={"version": 1, "reason": "Version 2 sent refunds to the wrong queue"})
    @post(paths.ROUTING_ROLLBACK, operation_id="rollbackRoutingRules", status_code=200,
          opt={"roles": {ROLE_SUPERVISOR}}, summary="Make an earlier version active again (as a new version)")
    async def rollback(self, request: Request[Any, Any, Any], services: Services) -> Response[dict[str, Any]]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), RollbackIn)
        store = RuleStore(services.store.r, services.store.keys)
        old = await store.get(incoming.version)
        if old is None:
            raise ProblemError(404, "version_not_found", f"No version {incoming.version}.", field="version")
        expected = _if_match(request) if request.headers.get("if-match") else await store.active_number()
        try:
            stored = await store.put(old.rules, expected=expected, by=principal_of(request).actor,
                                     reason=incoming.reason, rollback_of=incoming.version)
        except PreconditionFailed as exc:
            raise ProblemError(412, "version_mismatch", f"Version {exc.current} is active now.",
                               extra={"active_version": exc.current}) from None
        except InvalidRules as exc:
            raise _invalid(exc) from None
        return Response(_version_view(stored), headers={"ETag": _etag(stored.version)})

    @documented(DryRunIn, RulesDryRun, example={"rules": RULES_EXAMPLE, "limit": 500})
    @post(paths.ROUTING_DRY_RUN, operation_id="dryRunRoutingRules", status_code=200, opt={"roles": STAFF},
          summary="Replay a candidate rule set over recent complaints: what would move, where, examples")
    async def dry_run(self, request: Request[Any, Any, Any], services: Services) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 512 * 1024), DryRunIn)
        try:
            return await dry_run(services.store, incoming.rules, limit=incoming.limit,
                                 since_minutes=incoming.since_minutes)
        except InvalidRules as exc:
            raise _invalid(exc) from None


class AgentsController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["queues"]

    @documented(ok=AgentPage)
    @get(paths.AGENTS, operation_id="listAgents", opt={"roles": STAFF}, summary="Agents and their skills")
    async def index(self, services: Services) -> dict[str, Any]:
        skills = await agent_skills(services.store)
        agents = sorted({c.principal for c in services.settings.agent_tokens} | set(skills))
        return {"items": [{"id": a, "skills": skills.get(a)} for a in agents], "next": None}

    @documented(SkillsIn, Agent, example={"skills": ["payments", "general"]})
    @put(paths.AGENT_SKILLS, operation_id="putAgentSkills", opt={"roles": {ROLE_SUPERVISOR}},
         summary="The skill queues an agent may claim from")
    async def put_skills(self, request: Request[Any, Any, Any], services: Services,
                         agent_id: Annotated[str, PathParameter(max_length=64)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), SkillsIn)
        active = await RuleStore(services.store.r, services.store.keys).active()
        known = set(active.rules.queues) | {(await load_policy(services.store)).escalation_queue}
        unknown = sorted(set(incoming.skills) - known)
        if unknown:
            raise ProblemError(422, "unknown_skill", f"No such skill queue: {', '.join(unknown)}", field="skills")
        await services.store.r.hset(services.store.keys.agent_skills, agent_id, ",".join(incoming.skills))
        return {"id": agent_id, "skills": incoming.skills}


def _skills(value: bytes) -> list[str]:
    return [s for s in value.decode().split(",") if s]


async def agent_skills(store: ComplaintStore) -> dict[str, list[str]]:
    raw = await store.r.hgetall(store.keys.agent_skills)
    return {k.decode(): _skills(v) for k, v in raw.items()}


async def skills_of(store: ComplaintStore, agent: str) -> list[str] | None:
    """The agent's skills, or None when none are set (then every queue is open to them)."""
    value = await store.r.hget(store.keys.agent_skills, agent)
    return None if value is None else _skills(value)
