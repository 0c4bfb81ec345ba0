"""Versions of the routing rules in Redis: the active one, every earlier one, who changed what
and why; optimistic concurrency on the version; a per-process cache that picks up a new version
within a quarter of a second.

Keys (named in router/store/keys.py): ``routing:active`` (the active version number),
``routing:version:<n>`` (each version), ``routing:seq`` (the last number given),
``routing:history`` (one line per change).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec
from redis.exceptions import WatchError

from router.cached_read import CachedRead
from router.store.keys import Keys
from router.rules import Engine, Problem, RuleSet, StoredVersion, builtin_rules, validate

CHECK_EVERY_S = 0.25
_version_decoder = msgspec.json.Decoder(StoredVersion)


class PreconditionFailed(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(f"the active version is {current}")
        self.current = current


class InvalidRules(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.rule}.{p.field}: {p.problem}" for p in problems))
        self.problems = problems


def builtin_version() -> StoredVersion:
    return StoredVersion(version=0, rules=builtin_rules(), by="system", at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                         reason="built-in table")


class RuleStore:
    def __init__(self, redis: Any, keys: Keys | str) -> None:
        """``keys``: the store's ``Keys``, or the key prefix they are for."""
        self.r = redis
        self.keys = Keys.of(keys)

    async def active_number(self) -> int:
        value = await self.r.get(self.keys.routing_active)
        return int(value) if value else 0

    async def get(self, version: int) -> StoredVersion | None:
        if version == 0:
            return builtin_version()
        data = await self.r.get(self.keys.routing_version(version))
        return _version_decoder.decode(data) if data else None

    async def active(self) -> StoredVersion:
        return await self.get(await self.active_number()) or builtin_version()

    async def put(self, rule_set: RuleSet, *, expected: int, by: str, reason: str,
                  rollback_of: int | None = None) -> StoredVersion:
        """Make ``rule_set`` the active version, if ``expected`` is still the active one."""
        problems = validate(rule_set)
        if problems:
            raise InvalidRules(problems)
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.keys.routing_active)
                    current = await pipe.get(self.keys.routing_active)
                    current_n = int(current) if current else 0
                    if current_n != expected:
                        raise PreconditionFailed(current_n)
                    number = int(await pipe.get(self.keys.routing_seq) or 0) + 1
                    stored = StoredVersion(version=number, rules=rule_set, by=by, at=datetime.now(timezone.utc),
                                           reason=reason, rollback_of=rollback_of)
                    pipe.multi()
                    pipe.set(self.keys.routing_seq, number)
                    pipe.set(self.keys.routing_version(number), msgspec.json.encode(stored))
                    pipe.set(self.keys.routing_active, number)
                    pipe.rpush(self.keys.routing_history, msgspec.json.encode({
                        "version": number, "previous": current_n, "by": by, "at": stored.at, "reason": reason,
                        "rollback_of": rollback_of}))
                    await pipe.execute()
                    return stored
                except WatchError:
                    continue

    async def history(self, limit: int = 100) -> list[dict[str, Any]]:
        entries = [msgspec.json.decode(e) for e in await self.r.lrange(self.keys.routing_history, -limit, -1)]
        for entry in entries:
            old, new = await self.get(entry["previous"]), await self.get(entry["version"])
            entry["diff"] = diff(old.rules if old else None, new.rules if new else None)
        return list(reversed(entries))


def diff(old: RuleSet | None, new: RuleSet | None) -> dict[str, Any]:
    """What changed between two rule sets: rules added, removed, changed (by id), moved,
    queues added and removed, default changed."""
    if new is None:
        return {}
    before = {r.id: r for r in (old.rules if old else [])}
    after = {r.id: r for r in new.rules}
    order_before = [r.id for r in (old.rules if old else []) if r.id in after]
    order_after = [r.id for r in new.rules if r.id in before]
    return {
        "rules_added": [r for r in after if r not in before],
        "rules_removed": [r for r in before if r not in after],
        "rules_changed": [r for r in after if r in before and before[r] != after[r]],
        "rules_reordered": order_before != order_after,
        "queues_added": sorted(set(new.queues) - set(old.queues if old else [])),
        "queues_removed": sorted(set(old.queues if old else []) - set(new.queues)),
        "default_changed": (old.default if old else None) != new.default,
    }


class EngineCache:
    """The compiled active version, re-checked at most every ``CHECK_EVERY_S`` (one check for the
    decisions that find it due at the same time): a new version is used everywhere within that
    (plus the time of one decision); each decision uses one snapshot."""

    def __init__(self, store: RuleStore) -> None:
        self.store = store
        self.engine: Engine | None = None
        self._checks: CachedRead[Engine] = CachedRead(self._check, CHECK_EVERY_S)

    async def _check(self) -> Engine:
        number = await self.store.active_number()
        if self.engine is None or self.engine.version != number:
            stored = await self.store.get(number) or builtin_version()
            self.engine = Engine(stored.rules, stored.version)
        return self.engine

    async def get(self) -> Engine:
        return await self._checks.get()
