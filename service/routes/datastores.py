"""``GET /v1/datastores`` and ``GET /v1/datastores/{name}``: what the caller's team may use."""

from __future__ import annotations

from fastapi import APIRouter

from less_wire import DatastoreList, DatastoreSummary, ErrorResponse
from service.deps import CurrentTeam, GrantedDatastore, RegistryDep

router = APIRouter(prefix="/datastores", tags=["datastores"])


@router.get("", response_model=DatastoreList, responses={401: {"model": ErrorResponse}})
async def list_datastores(team: CurrentTeam, registry: RegistryDep) -> DatastoreList:
    """The datastores granted to the caller's team, with their manifest summary."""
    names = [n for n in registry.names() if n in team.datastores]
    return DatastoreList(datastores=[registry.summary(n) for n in names])


@router.get("/{name}", response_model=DatastoreSummary, responses={404: {"model": ErrorResponse}})
async def get_datastore(name: GrantedDatastore, registry: RegistryDep) -> DatastoreSummary:
    """One datastore's published version: model, size, checkpoints and projector."""
    return registry.summary(name)
