"""``GET /v1/datastores``, ``GET /v1/datastores/{name}`` and its ``/fields``: what the caller's
team may use, and the pool metadata a selection can filter on."""

from __future__ import annotations

from fastapi import APIRouter

from less_wire import DatastoreFields, DatastoreList, DatastoreSummary, ErrorResponse, FieldSummary
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


@router.get(
    "/{name}/fields", response_model=DatastoreFields, responses={404: {"model": ErrorResponse}}
)
async def get_fields(name: GrantedDatastore, registry: RegistryDep) -> DatastoreFields:
    """The pool metadata fields stored in the served version (filterable in a selection), with
    their kinds, value ranges and most frequent values; ``n_tokens`` is always among them when
    the version stores metadata, and the list is empty for versions built before it was."""
    store = registry.store(name)
    metadata = store.metadata
    fields = [] if metadata is None else [FieldSummary(**f) for f in metadata.summaries()]
    return DatastoreFields(datastore=name, version=store.version, n_examples=store.n, fields=fields)
