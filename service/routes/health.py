"""Liveness, readiness and Prometheus metrics (no auth, outside /v1)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from service.deps import RegistryDep, ServicesDep

router = APIRouter(tags=["health"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    datastores: dict[str, str]


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (also while engines load)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(registry: RegistryDep) -> JSONResponse:
    """200 once every datastore's engine is loaded, else 503 with each one's state."""
    body = Readiness(ready=registry.ready, datastores=registry.states())
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(services: ServicesDep) -> PlainTextResponse:
    """Prometheus text format."""
    return PlainTextResponse(services.metrics.render(), media_type=PROMETHEUS_TEXT)
