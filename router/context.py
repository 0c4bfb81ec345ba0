"""What a worker process holds for its jobs: one typed object, made at start-up.

arq calls every job with its own ``ctx`` dict (a fresh copy per job, with arq's ``job_try`` and
``redis``); ours rides in it under one key, ``ctx["worker"]``, and a job takes it with
``context_of(ctx)``. Everything on it is shared by every job of the process (the caches, the
send gates, the plugin error counts already reported).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from plugins.contract import GatewayServices
from plugins.manager import GatewayPlugins
from plugins.settings import Settings
from router.deadlines import DeadlinePolicy
from router.incidents import Incidents
from router.rules import Engine
from router.rulestore import EngineCache, RuleStore
from router.services import build_services
from router.store import ComplaintStore
from router.timers import Clock, PolicyCache, TimerLoop

if TYPE_CHECKING:
    from router.understanding.model_cache import ModelCache

#: The key of arq's ctx that holds our ``WorkerContext``.
WORKER_KEY = "worker"


@dataclass
class WorkerContext:
    settings: Settings
    store: ComplaintStore
    plugins: GatewayPlugins
    services: GatewayServices
    #: host:pid:random, recorded on each routing decision and in the worker heartbeat.
    worker_id: str = ""
    #: The deadline clock (the test clock's offset when it is on); ``None``: wall-clock time.
    clock: Clock | None = None
    #: The deadline policy as supervisors last saved it (re-read at most once a second).
    policy: PolicyCache = field(init=False)
    #: The active routing rules, compiled (re-checked every quarter of a second).
    rules: EngineCache = field(init=False)
    #: The learned categoriser, following promotions (loaded at start-up); ``None``: the keyword
    #: rules categorise (``GATEWAY_CATEGORISER=keywords``, or a context made by hand with ``of``).
    categoriser: "ModelCache | None" = None
    #: Sends in flight per channel (``router.delivery``).
    send_gates: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    #: Plugin errors already counted in the shared metrics, per plugin (``router.worker.instrumented``).
    plugin_errors_reported: dict[str, int] = field(default_factory=dict)
    #: The deadline timer loop, once started.
    timers: TimerLoop | None = None
    #: Housekeeping, timers and pollers: cancelled at shutdown.
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    #: The incident check (many customers, one fault), with the settings' window.
    incidents: Incidents = field(init=False)

    def __post_init__(self) -> None:
        self.policy = PolicyCache(self.store)
        self.rules = EngineCache(RuleStore(self.store.r, self.store.keys))
        self.incidents = Incidents(self.store, self.settings.incident_window_minutes,
                                   self.settings.incident_min_customers)

    @classmethod
    def of(cls, settings: Settings, store: ComplaintStore, plugins: GatewayPlugins | None = None,
           services: GatewayServices | None = None, **more: Any) -> WorkerContext:
        """A context for a bound store (a test or a benchmark running jobs by hand): no plugins
        and the worker's own services unless given."""
        return cls(settings=settings, store=store, plugins=plugins if plugins is not None else GatewayPlugins(),
                   services=services if services is not None else build_services(settings, store), **more)

    def job_ctx(self) -> dict[str, Any]:
        """A ctx dict as arq hands a job, holding this context (for calling a job by hand)."""
        return {WORKER_KEY: self}

    def now(self) -> datetime:
        """Now, by the deadline clock."""
        return self.clock.now() if self.clock is not None else datetime.now(timezone.utc)

    async def deadline_policy(self) -> DeadlinePolicy:
        return await self.policy.get()

    async def engine(self) -> Engine:
        """The routing rules in force now."""
        return await self.rules.get()

    def send_gate(self, channel: str) -> asyncio.Semaphore:
        """Sends in flight per channel are capped at a quarter of the worker's job slots: a
        provider that stalls (each send waiting out its timeout) must not hold every slot, or all
        channels' messages would wait behind it. A send that finds its channel full backs off."""
        gate = self.send_gates.get(channel)
        if gate is None:
            gate = self.send_gates[channel] = asyncio.Semaphore(max(1, self.settings.worker_max_jobs // 4))
        return gate


def context_of(ctx: dict[str, Any]) -> WorkerContext:
    """Our context in the ctx dict arq hands a job."""
    worker: WorkerContext = ctx[WORKER_KEY]
    return worker


def job_try(ctx: dict[str, Any]) -> int:
    """Which try of its job this is (arq counts from 1)."""
    return int(ctx.get("job_try", 1))


__all__ = ["WORKER_KEY", "WorkerContext", "context_of", "job_try"]
