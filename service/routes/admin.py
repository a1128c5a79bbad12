"""The admin API (``/v1/admin/...``, admin key only) and key rotation (``/v1/keys/rotate``,
the team's own key).

Datastores (path + model_dir, loaded in the background), teams, grants and team keys are
changed at run time and persisted in the admin state file before they take effect (see
``service.access``). New keys are returned once; only their sha256 is kept.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from less_wire import (
    AdminDatastore,
    AdminDatastoreAdd,
    AdminDatastoreList,
    AdminTeam,
    AdminTeamAdd,
    AdminTeamList,
    ErrorResponse,
    IssuedKey,
)
from service.deps import AdminDep, CurrentKey, ServicesDep
from service.errors import not_found

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (401, 404, 409, 422, 503)
}

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep], responses=_ERRORS)
keys_router = APIRouter(prefix="/keys", tags=["keys"])

DatastoreName = Annotated[str, Path(max_length=64)]
TeamName = Annotated[str, Path(max_length=64)]
KeyId = Annotated[str, Path(max_length=64)]


@router.get("/datastores", response_model=AdminDatastoreList)
async def list_datastores(services: ServicesDep) -> AdminDatastoreList:
    """Every datastore, with its path, state and the teams granted it."""
    return AdminDatastoreList(datastores=services.access.datastores())


@router.post("/datastores", response_model=AdminDatastore, status_code=202)
async def add_datastore(body: AdminDatastoreAdd, services: ServicesDep) -> AdminDatastore:
    """Adds a datastore; it loads in the background (poll its state), then can be granted."""
    return await asyncio.to_thread(services.access.add_datastore, body)


@router.get("/datastores/{name}", response_model=AdminDatastore)
async def get_datastore(name: DatastoreName, services: ServicesDep) -> AdminDatastore:
    """One datastore: where it lives, whether it is loading, ready or failed, who has it."""
    for datastore in services.access.datastores():
        if datastore.name == name:
            return datastore
    raise not_found(f"datastore {name!r} not found")


@router.delete("/datastores/{name}", status_code=204, response_class=Response)
async def remove_datastore(name: DatastoreName, services: ServicesDep) -> Response:
    """Stops serving a datastore (files untouched) and revokes every grant of it."""
    await asyncio.to_thread(services.access.remove_datastore, name)
    return Response(status_code=204)


@router.get("/teams", response_model=AdminTeamList)
async def list_teams(services: ServicesDep) -> AdminTeamList:
    """Every team with its grants, rate limit and key ids (never keys)."""
    return AdminTeamList(teams=services.access.teams())


@router.post("/teams", response_model=IssuedKey, status_code=201)
async def add_team(body: AdminTeamAdd, services: ServicesDep) -> IssuedKey:
    """Creates a team; its first key is in the answer (shown once)."""
    return await asyncio.to_thread(services.access.add_team, body)


@router.get("/teams/{team}", response_model=AdminTeam)
async def get_team(team: TeamName, services: ServicesDep) -> AdminTeam:
    return services.access.team(team)


@router.delete("/teams/{team}", status_code=204, response_class=Response)
async def remove_team(team: TeamName, services: ServicesDep) -> Response:
    """Removes a team: its keys stop working at once."""
    await asyncio.to_thread(services.access.remove_team, team)
    return Response(status_code=204)


@router.put("/teams/{team}/datastores/{name}", response_model=AdminTeam)
async def grant_datastore(team: TeamName, name: DatastoreName, services: ServicesDep) -> AdminTeam:
    """Grants the team a datastore (idempotent)."""
    return await asyncio.to_thread(services.access.grant, team, name, True)


@router.delete("/teams/{team}/datastores/{name}", response_model=AdminTeam)
async def revoke_datastore(team: TeamName, name: DatastoreName, services: ServicesDep) -> AdminTeam:
    """Revokes the team's grant of a datastore."""
    return await asyncio.to_thread(services.access.grant, team, name, False)


@router.post("/teams/{team}/keys", response_model=IssuedKey, status_code=201)
async def add_key(team: TeamName, services: ServicesDep) -> IssuedKey:
    """A new key for the team (shown once); its other keys keep working."""
    return await asyncio.to_thread(services.access.add_key, team)


@router.delete("/teams/{team}/keys/{key_id}", response_model=AdminTeam)
async def revoke_key(team: TeamName, key_id: KeyId, services: ServicesDep) -> AdminTeam:
    """Revokes one of the team's keys by its key id (a team keeps at least one key)."""
    return await asyncio.to_thread(services.access.revoke_key, team, key_id)


@keys_router.post(
    "/rotate",
    response_model=IssuedKey,
    responses={status: {"model": ErrorResponse} for status in (401, 422, 429, 503)},
)
async def rotate_key(caller: CurrentKey, services: ServicesDep) -> IssuedKey:
    """Replaces the key this request presents with a new one, returned once; the presented
    key stops working when the answer is sent. The team's other keys are untouched."""
    team, digest = caller
    return await asyncio.to_thread(services.access.rotate, team.name, digest)
