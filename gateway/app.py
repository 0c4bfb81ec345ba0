"""The Litestar app factory: plugin routes, the operations API, health, OpenAPI at /schema."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from litestar import Litestar, Response, Router, get
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from gateway import paths
from gateway.api import ComplaintsController, QuarantineController, QueuesController
from gateway.api_appeals import AppealsController
from gateway.api_console import ConsoleController, console_handlers
from gateway.api_doc import documented, render_plugins
from gateway.api_doc_channels import CHANNEL_DOCS
from gateway.api_types import Health, Problem, Ready
from gateway.api_approvals import ApprovalsController
from gateway.api_model import ModelController
from gateway.api_people import CustomersController, IncidentsController
from gateway.api_routing import AgentsController, RoutingController
from gateway.api_service import PolicyController, ReportsController
from gateway.auth import Authenticator
from gateway.direct_routes import GatewayApp, own_direct
from gateway.problems import body_limit_middleware, exception_handlers
from plugins.problems import ProblemError
from router.metrics import MetricsFlusher
from router.pacing import IntakeLoadReport
from router.redis_pool import redis_client, route_now
from plugins.settings import Settings
from router.store import ComplaintStore
from plugins.manager import GatewayPlugins
from router.services import build_services

log = logging.getLogger("gateway.app")


def create_app(settings: Settings, *, plugins: GatewayPlugins | None = None) -> GatewayApp:
    """Build the HTTP app. ``settings.redis_url`` must be set (the CLI resolves the embedded one)."""
    if settings.redis_url is None:
        raise ValueError("create_app needs settings.redis_url (the CLI starts the embedded Redis)")
    plugins = plugins or GatewayPlugins.load(settings.plugins_path, autoload=settings.plugins_autoload)
    store = ComplaintStore(settings.redis_prefix, worker_wake=settings.worker_wake, limits=settings.intake_limits())
    services = build_services(settings, store)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = redis_client(settings.redis_url or "", follow_slot_of=settings.redis_prefix)
        await route_now(redis)
        store.bind(redis)
        services.redis = redis
        # intake outcomes are tallied here and written once a second (one HINCRBY per message
        # otherwise); a last write when the app stops
        flushing = asyncio.create_task(MetricsFlusher(redis).run(), name="metrics")
        # this process's load, for the workers' pace in a surge (router/pacing.py)
        reporting = asyncio.create_task(IntakeLoadReport(store.report_intake_load, store.forget_intake_load).run(),
                                        name="intake-load")
        try:
            yield
        finally:
            flushing.cancel()
            reporting.cancel()
            await asyncio.gather(flushing, reporting, return_exceptions=True)
            await redis.aclose()

    @documented(ok=Health, ok_example={"status": "ok"})
    @get(paths.HEALTH, operation_id="health", tags=["operations"], summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @documented(ok=Ready, ok_example={"status": "ok", "checks": {"redis": "ok", "worker": "ok"}},
                also={503: (Ready, "Redis unreachable or no worker alive")})
    @get(paths.READY, operation_id="ready", tags=["operations"],
         summary="Readiness: Redis reachable and a worker alive")
    async def ready() -> Response[dict[str, Any]]:
        checks: dict[str, str] = {}
        try:
            await store.r.ping()
            checks["redis"] = "ok"
            checks["worker"] = "ok" if await store.worker_alive() else "no worker heartbeat in 15 s"
        except Exception as exc:
            checks["redis"] = f"unreachable ({type(exc).__name__})"
            checks["worker"] = "unknown"
        ok = all(v == "ok" for v in checks.values())
        return Response({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    @documented(ok=str, ok_description="Prometheus text exposition", also={503: (Problem, "Redis unreachable")})
    @get(paths.METRICS, operation_id="metrics", tags=["operations"], media_type="text/plain",
         summary="Prometheus metrics (the whole desk's counters, this process's intake latency)")
    async def metrics_endpoint() -> Response[bytes]:
        from prometheus_client import CONTENT_TYPE_LATEST

        from router.metrics import render

        try:
            body = await render(store, dict(plugins.errors))
        except Exception as exc:  # Redis away: say so, as a metric endpoint should
            raise ProblemError(503, "redis_unavailable", f"metrics need Redis ({type(exc).__name__})") from None
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    route_handlers: list[Any] = [health, ready, metrics_endpoint, *console_handlers(), ComplaintsController,
                                 QueuesController, QuarantineController, CustomersController, IncidentsController,
                                 PolicyController, ReportsController, RoutingController, AgentsController,
                                 ModelController, ConsoleController, ApprovalsController, AppealsController]
    direct: dict[str, Any] = {}
    for plugin_name, mount in plugins.routes(services):
        prefix = f"{paths.WEBHOOKS}/{plugin_name}" if mount.prefix is None else mount.prefix
        # (each beside a route of the plugin's own; two plugins never mount one path)
        direct.update(own_direct(plugin_name, mount, prefix))
        if prefix:
            route_handlers.append(Router(path=prefix, route_handlers=list(mount.handlers)))
        else:
            route_handlers.extend(mount.handlers)

    app = GatewayApp(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        dependencies={"services": Provide(lambda: services, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        request_max_body_size=settings.max_body_bytes,
        middleware=[body_limit_middleware(settings.max_body_bytes)],
        openapi_config=OpenAPIConfig(
            title="Complaint intake gateway",
            version="0.1.0",
            path="/schema",
            components=Components(security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer",
                                         description="App key, agent token or supervisor token"),
            }),
            security=[{"bearer": []}],
            render_plugins=render_plugins(CHANNEL_DOCS),
        ),
        debug=False,
        # Logging belongs to gateway.cli.setup_logging (its handler masks personal data); left to
        # itself Litestar would replace the root handlers with its own, unmasked.
        logging_config=None,
    )
    app.use_direct(direct, settings.max_body_bytes)
    app.state.authenticator = Authenticator(settings)
    app.state.services = services
    app.state.plugins = plugins
    return app
