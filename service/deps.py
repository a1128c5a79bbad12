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


def current_team(
    services: ServicesDep,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
) -> Team:
    """The caller's team (401 otherwise), after spending one of its rate-limit tokens (429)."""
    team = services.keyring.team_for(authorization)
    services.limiter.check(team)
    return team


CurrentTeam = Annotated[Team, Depends(current_team)]


def granted_datastore(
    team: CurrentTeam, registry: RegistryDep, name: Annotated[str, Path()]
) -> str:
    """The path's datastore name if the team may use it; 404 otherwise (even if it exists)."""
    if name not in team.datastores or name not in registry.names():
        raise not_found(f"datastore {name!r} not found")
    return name


GrantedDatastore = Annotated[str, Depends(granted_datastore)]
