"""``create_app(settings)``: the FastAPI application with its lifespan, routers and handlers."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

import less_core
from service.errors import install_error_handlers
from service.limits import ADMIN_PREFIX, RequestLimits
from service.registry import EngineFactory, default_engine_factory
from service.routes import api_router, health, ui
from service.services import Services
from service.settings import ServiceSettings

log = logging.getLogger(__name__)


def create_app(
    settings: ServiceSettings, engine_factory: EngineFactory = default_engine_factory
) -> FastAPI:
    """Builds the app; engines load in the background once the lifespan starts.

    Args:
        settings: Validated service settings.
        engine_factory: Builds a ``QueryEngine`` per datastore (tests may substitute one).
    """
    services = Services(settings, engine_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            services.stop()

    app = FastAPI(
        title="LESS gradient search service",
        version=less_core.__version__,
        summary="Select influential training data by LoRA gradient similarity (LESS).",
        lifespan=lifespan,
        # /docs and /redoc come from routes/ui.py with their assets served here (no CDN).
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(api_router)
    app.include_router(ui.router)

    def authenticate(path: str, authorization: str | None) -> None:
        """401 unless the key may call ``path`` (the route checks it again, and its grants)."""
        admin_keys = getattr(services, "admin_keys", None)
        if admin_keys is not None and (path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")):
            admin_keys.check(authorization)
        else:
            services.keyring.team_for(authorization)

    # Inside the metrics middleware below (added later, so outside), so refusals are counted.
    app.add_middleware(
        RequestLimits,
        authenticate=authenticate,
        max_body_bytes=settings.max_body_bytes,
        body_read_timeout_s=settings.body_read_timeout_s,
    )

    @app.middleware("http")
    async def record_metrics(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # The route template, not the raw path, so that names and job ids do not explode labels.
        label = getattr(route, "path", "unmatched")
        services.metrics.requests.inc(request.method, label, str(response.status_code))
        services.metrics.latency.observe(time.perf_counter() - start, label)
        return response

    return app
