"""The worker process: arq running our jobs, plus housekeeping, deadline timers and pollers.

The jobs, each safe to run twice (arq promises at-least-once):

- ``process_message`` (``router.pipeline``): a stored message becomes a routed complaint;
- ``send_reply``, ``dispatch_event`` and ``dispatch_events`` (``router.delivery``): replies out,
  events to listeners (one at a time, or the event outbox in batches);
- ``consider_incident`` (``router.incident_check``): a new complaint joins or forms an incident;
- ``fetch_evidence`` (``router.evidence_fetch``): an announced attachment fetched and stored;
- ``payment_lookup`` (``router.payment_check``): the payment records asked again after they were away.

Every job gets the process's ``WorkerContext`` (``router.context``) through arq's ctx.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from typing import Any, Awaitable, Callable

from arq import Retry
from arq.connections import RedisSettings
from arq.worker import Function, func

from normalizer.ids import new_id
from plugins.manager import GatewayPlugins
from plugins.settings import Settings
from router import evidence_fetch, metrics, payment_check
from router.arq_worker import WakeableWorker
from router.context import WORKER_KEY, WorkerContext, job_try
from router.services import build_services
from router.heap import settle_heap
from router.delivery import DISPATCH_EVENTS_TRIES, MAX_SEND_TRIES, dispatch_event, dispatch_events, send_reply
from router.housekeeping import housekeeping, run_poller
from router.incident_check import consider_incident
from router.pacing import Pacer
from router.pipeline import process_message
from router.redis_pool import SENTINEL_SCHEME, redis_unavailable, route_now
from router.store import ComplaintStore, ingest_job_bytes
from router.timers import Clock, TimerLoop

log = logging.getLogger("gateway.worker")

#: A job as arq calls it: its ctx, then the job's own arguments.
Job = Callable[..., Awaitable[Any]]


def instrumented(fn: Job) -> Job:
    """Count a job's result (ok, retry, failed) and time it, in the shared metrics; pass on the
    plugin errors this process counted since the last job."""

    @functools.wraps(fn)
    async def run(ctx: dict[str, Any], *args: Any) -> Any:
        started = time.perf_counter()
        result = "ok"
        w: WorkerContext | None = ctx.get(WORKER_KEY)
        # arq cancels a job at its timeout and counts it failed, never retried: stop it a little
        # earlier and retry it with backoff instead (every step is safe to run again)
        limit = max(1.0, w.settings.job_timeout_seconds - 2) if w is not None else None
        try:
            async with asyncio.timeout(limit):
                return await fn(ctx, *args)
        except TimeoutError:
            result = "retry"
            log.warning("%s ran out of time (%.0f s); retrying", fn.__name__, limit)
            raise Retry(defer=min(60, 2 ** job_try(ctx))) from None
        except Retry:
            result = "retry"
            raise
        except Exception as exc:
            if not redis_unavailable(exc):
                result = "failed"
                raise
            # Redis restarting, a failover, a slot moving, a connection reset (raised as a plain
            # OSError): the step did not finish and is safe to run again (arq would otherwise
            # count it failed and drop it)
            result = "retry"
            raise Retry(defer=1) from exc
        finally:
            if w is not None:
                await _count(w, fn.__name__, result, time.perf_counter() - started)

    return run


async def _count(w: WorkerContext, job: str, result: str, seconds: float) -> None:
    store = w.store
    try:
        tally = metrics.tally_of(store.r)
        if tally is not None:  # (the worker's flusher runs: its tally takes them, no pipeline needed)
            return _count_into(tally, w, job, result, seconds)
        async with store.r.pipeline(transaction=False) as pipe:
            _count_into(pipe, w, job, result, seconds)
            await pipe.execute()
    except Exception:  # noqa: BLE001 - metrics never fail a job
        pass


def _count_into(pipe: Any, w: WorkerContext, job: str, result: str, seconds: float) -> None:
    keys = w.store.keys
    metrics.incr(pipe, keys, "gateway_worker_jobs", job=job, result=result)
    metrics.observe(pipe, keys, "gateway_worker_job_seconds", seconds, job=job)
    seen = w.plugin_errors_reported
    for name, count in w.plugins.errors.items():
        if count > seen.get(name, 0):
            metrics.incr(pipe, keys, "gateway_plugin_errors", count - seen.get(name, 0), plugin=name)
            seen[name] = count


def job_functions(settings: Settings) -> list[Function]:
    """Every job this worker runs, with how often each is tried."""
    return [
        func(instrumented(process_message), name="process_message", max_tries=10),
        func(instrumented(send_reply), name="send_reply", max_tries=MAX_SEND_TRIES + 1),
        func(instrumented(dispatch_event), name="dispatch_event", max_tries=3),
        func(instrumented(dispatch_events), name="dispatch_events", max_tries=DISPATCH_EVENTS_TRIES),
        func(instrumented(consider_incident), name="consider_incident", max_tries=15),
        func(instrumented(evidence_fetch.fetch_evidence), name=evidence_fetch.JOB,
             max_tries=evidence_fetch.arq_max_tries(settings)),
        func(instrumented(payment_check.payment_lookup), name=payment_check.JOB, max_tries=payment_check.ARQ_MAX_TRIES),
    ]


# -- start-up and shutdown ----------------------------------------------------------------------


async def startup(ctx: dict[str, Any]) -> None:
    """arq's on_startup: our context (store, plugins, caches...) into ctx, the background tasks
    started, then the first heartbeat (waiting for Redis if it is not there yet)."""
    settings: Settings = ctx["settings"]
    await route_now(ctx["redis"])
    store = ComplaintStore(settings.redis_prefix, worker_wake=settings.worker_wake, limits=settings.intake_limits())
    store.bind(ctx["redis"])
    services = build_services(settings, store)
    services.redis = ctx["redis"]
    plugins: GatewayPlugins | None = ctx.get("plugins")
    if plugins is None:
        plugins = GatewayPlugins.load(settings.plugins_path, autoload=settings.plugins_autoload)
    w = WorkerContext(settings=settings, store=store, plugins=plugins, services=services,
                      worker_id=f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[-6:]}",
                      clock=Clock(store, settings.test_clock))
    ctx[WORKER_KEY] = w
    pacer: Pacer | None = ctx.get("pacer")
    if pacer is not None:
        # the gateways' load, read through this worker's pool; its surges counted as jobs are
        pacer.watch(store.intake_load, lambda name, by: metrics.tally_add(store.r, store.keys, name, by),
                    persisting=store.persisting_in_a_child)
    w.categoriser = await load_categoriser(settings, store)
    w.timers = TimerLoop(store, w.clock, w.policy, listeners=plugins.has_listeners)
    w.background = [asyncio.create_task(housekeeping(w), name="housekeeping"),
                    asyncio.create_task(w.timers.run(), name="timers")]
    for plugin_name, poller in plugins.pollers(services):
        w.background.append(asyncio.create_task(run_poller(services, plugin_name, poller, plugins),
                                                name=f"poller:{plugin_name}:{poller.name}"))
    while True:  # a worker may start before its Redis (or during a failover): wait for it
        try:
            await store.worker_heartbeat(w.worker_id)
            break
        except Exception as exc:  # noqa: BLE001 - Redis's "not now" comes as more than RedisError
            if not redis_unavailable(exc):
                raise
            log.warning("worker %s: redis unavailable at start (%s); trying again in 1 s", w.worker_id,
                        type(exc).__name__)
            await asyncio.sleep(1)
    log.info("worker %s started", w.worker_id)


async def load_categoriser(settings: Settings, store: ComplaintStore) -> Any:
    """The learned categoriser, loaded before any job runs (a fresh clone trains the default
    once); ``None`` with ``GATEWAY_CATEGORISER=keywords``. A model that cannot load is logged and
    the cache kept: each message then asks again and falls back to the keyword rules."""
    if settings.categoriser != "model":
        log.info("categoriser: the keyword rules (GATEWAY_CATEGORISER=keywords)")
        return None
    from router.understanding.model_cache import ModelCache

    cache = ModelCache(store.r, store.keys, settings.models_path)
    try:
        await cache.get()
    except Exception as exc:  # noqa: BLE001 - the worker runs on the keyword rules meanwhile
        log.warning("categoriser: no model loads from %s (%s: %s); the keyword rules decide until one does",
                    settings.models_path, type(exc).__name__, exc)
    return cache


async def shutdown(ctx: dict[str, Any]) -> None:
    w: WorkerContext | None = ctx.get(WORKER_KEY)
    tasks = w.background if w is not None else []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- the process --------------------------------------------------------------------------------


def create_worker(settings: Settings, *, burst: bool = False, plugins: GatewayPlugins | None = None,
                  handle_signals: bool = True) -> WakeableWorker:
    store_keys = ComplaintStore(settings.redis_prefix).keys
    pacer = Pacer(settings.worker_surge_share, settings.worker_surge_lag_seconds,
                  most_behind_seconds=settings.worker_surge_most_behind_seconds)
    # what start-up needs to build the WorkerContext (and to give the pacer the gateways' load)
    ctx: dict[str, Any] = {"settings": settings, "pacer": pacer}
    if plugins is not None:
        ctx["plugins"] = plugins
    redis_url = settings.redis_url or "redis://127.0.0.1:6379/0"
    return WakeableWorker(
        functions=job_functions(settings),
        # arq's own settings are not used to connect (main() builds the pool from redis_url)
        redis_settings=RedisSettings() if redis_url.startswith(SENTINEL_SCHEME) else RedisSettings.from_dsn(redis_url),
        queue_name=store_keys.arq_queue,
        on_startup=startup,
        on_shutdown=shutdown,
        ctx=ctx,
        max_jobs=settings.worker_max_jobs,
        job_timeout=settings.job_timeout_seconds,
        keep_result=0,  # nobody reads job results; the complaint is the result
        poll_delay=settings.worker_poll_seconds,
        health_check_interval=60,
        burst=burst,
        handle_signals=handle_signals,
        wake_key=store_keys.wake,
        redis_url=redis_url,
        slot_key=settings.redis_prefix,
        implicit_job=lambda job_id, score: ingest_job_bytes(job_id, store_keys.tag, score),
        pacer=pacer,
        claim_gap=settings.worker_claim_gap_ms / 1000,
    )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (as with uvicorn[standard]), else asyncio's.

    A job awaits Redis a dozen times; uvloop's callbacks, futures and socket reads cost the
    worker about a tenth less CPU per message than asyncio's own loop (bench/cost.py).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard] on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def yield_cpu(nice: int, idle: bool = False) -> None:
    """This process's niceness raised to ``nice`` (never lowered: that needs privilege; 0: left
    as started), and with ``idle`` its scheduling class set to Linux's ``SCHED_IDLE``: it then
    runs only on a CPU that no other process wants. Where a worker shares its host's cores with a
    gateway (``make run``, one VM), a burst's intake then wins the CPU: its acknowledgements stay
    fast and the worker works through the backlog as the gateway leaves it room, then at full
    speed (bench/intake.py; README "Overload, abuse and faults"). Both are opt-in: the same yield
    slows routing whenever anything else on the host wants the CPU (an AOF rewrite, the load itself).

    On Linux both are per thread: set on every thread the process has (a library may have started
    some at import), and threads started later inherit them."""
    if nice <= 0 and not idle:
        return
    for tid in _threads():
        try:
            if nice > 0 and nice > os.getpriority(os.PRIO_PROCESS, tid):
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError as exc:  # a sandbox that forbids it, or a thread that ended: run as started
            if tid == os.getpid():
                log.warning("worker: niceness %d not set (%s)", nice, exc)
        try:
            if idle and hasattr(os, "SCHED_IDLE"):
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:
            if tid == os.getpid():
                log.warning("worker: SCHED_IDLE not set (%s); niceness %d only", exc, nice)


def _threads() -> list[int]:
    """The ids of this process's threads (its own id alone where /proc does not list them)."""
    try:
        return sorted(int(t) for t in os.listdir("/proc/self/task"))
    except (OSError, ValueError):
        return [os.getpid()]


def run_worker(settings: Settings) -> None:
    """The worker process (``python -m gateway worker`` loads the settings and calls this)."""
    if settings.log_level != "DEBUG":
        logging.getLogger("arq.worker").setLevel(logging.WARNING)  # two lines per job otherwise
    yield_cpu(settings.worker_nice, settings.worker_idle)
    asyncio.set_event_loop(new_event_loop())
    worker = create_worker(settings)  # arq's Worker takes the loop set here
    started = worker.on_startup

    async def start_then_settle(ctx: dict[str, Any]) -> None:
        await started(ctx)  # type: ignore[misc]
        settle_heap()  # what start-up loaded (the model among it) is never walked by the collector again

    worker.on_startup = start_then_settle
    worker.run()


__all__ = ["create_worker", "instrumented", "job_functions", "load_categoriser", "new_event_loop", "run_worker",
           "shutdown", "startup", "yield_cpu"]
