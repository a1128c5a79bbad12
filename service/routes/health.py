"""Liveness, readiness and Prometheus metrics (no auth needed, outside /v1).

Readiness: ready (200) once every datastore configured at start has been tried — each is
ready or failed — and at least one serves; a failed datastore does not hold the others back.
Anyone gets only ``{"ready": bool}``; with the admin key the answer also names each
datastore's state and an overall ``status`` (``degraded`` when some do not serve).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from less_wire import AdminReadiness, Readiness
from less_wire.admin import Status
from service.deps import AuthorizationHeader, ServicesDep
from service.registry import Registry

router = APIRouter(tags=["health"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Health(BaseModel):
    status: str


def readiness(registry: Registry) -> AdminReadiness:
    """Whether the service can serve, with each datastore's state."""
    states = registry.states()
    status: Status
    serving = [name for name, state in states.items() if state == "ready"]
    if not registry.loaded.is_set():
        status = "loading"
    elif not serving:
        status = "unavailable"
    elif len(serving) < len(states):
        status = "degraded"
    else:
        status = "ready"
    return AdminReadiness(
        ready=status in ("ready", "degraded"),
        status=status,
        datastores=dict(sorted(states.items())),
    )


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (also while engines load)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness | AdminReadiness,
    responses={503: {"model": Readiness}},
)
async def readyz(services: ServicesDep, authorization: AuthorizationHeader = None) -> JSONResponse:
    """200 when ready (see the module doc), else 503. Only the admin key gets the detail."""
    detail = readiness(services.registry)
    body: Readiness = (
        detail if services.admin_keys.is_admin(authorization) else Readiness(ready=detail.ready)
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(services: ServicesDep) -> PlainTextResponse:
    """Prometheus text format."""
    return PlainTextResponse(services.metrics.render(), media_type=PROMETHEUS_TEXT)
