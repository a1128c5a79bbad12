"""``Annotated`` dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request

from service.auth import Team
from service.errors import not_found
from service.jobs import JobStore
from service.registry import Registry
from service.selector import Selector
from service.services import Services
from service.settings import ServiceSettings


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> ServiceSettings:
    return services.settings


def get_registry(services: ServicesDep) -> Registry:
    return services.registry


def get_selector(services: ServicesDep) -> Selector:
    return services.selector


def get_jobs(services: ServicesDep) -> JobStore:
    return services.jobs


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
SelectorDep = Annotated[Selector, Depends(get_selector)]
JobStoreDep = Annotated[JobStore, Depends(get_jobs)]


AuthorizationHeader = Annotated[str | None, Header(description="Bearer <API key>")]

POLL_ENDPOINTS = frozenset({"service.routes.jobs.get_job"})
"""Endpoints (``GET /v1/jobs/{job_id}``) whose requests spend the team's polling bucket
instead of its rate limit; named by function, as FastAPI keeps only the innermost router's
part of the path on the request."""


def _is_polling(request: Request) -> bool:
    endpoint = request.scope.get("endpoint")
    name = f"{getattr(endpoint, '__module__', '')}.{getattr(endpoint, '__qualname__', '')}"
    return request.method == "GET" and name in POLL_ENDPOINTS


def current_key(
    services: ServicesDep, authorization: AuthorizationHeader = None
) -> tuple[Team, str]:
    """The caller's team and the digest of the key it presented (401 otherwise), after
    spending one of its rate-limit tokens (429)."""
    team, digest = services.keyring.identify(authorization)
    services.limiter.check(team)
    return team, digest


CurrentKey = Annotated[tuple[Team, str], Depends(current_key)]


def current_team(
    request: Request, services: ServicesDep, authorization: AuthorizationHeader = None
) -> Team:
    """The caller's team (401 otherwise), after spending one of its rate-limit tokens (429) —
    of its polling bucket for job polling (``POLL_ROUTES``)."""
    team = services.keyring.team_for(authorization)
    services.limiter.check(team, polling=_is_polling(request))
    return team


CurrentTeam = Annotated[Team, Depends(current_team)]


def require_admin(services: ServicesDep, authorization: AuthorizationHeader = None) -> None:
    """401 unless the caller presents an admin key (team keys never qualify)."""
    services.admin_keys.check(authorization)


AdminDep = Depends(require_admin)


def granted_datastore(
    team: CurrentTeam, registry: RegistryDep, name: Annotated[str, Path()]
) -> str:
    """The path's datastore name if the team may use it; 404 otherwise (even if it exists)."""
    if name not in team.datastores or name not in registry.names():
        raise not_found(f"datastore {name!r} not found")
    return name


GrantedDatastore = Annotated[str, Depends(granted_datastore)]
