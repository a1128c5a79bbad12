"""``POST /v1/datastores/{name}/select``: influential training IDs for a few target examples."""

from __future__ import annotations

from fastapi import APIRouter

from less_wire import ErrorResponse, SelectRequest, SelectResponse
from service.deps import CurrentTeam, GrantedDatastore, SelectorDep

router = APIRouter(prefix="/datastores", tags=["select"])

_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 422, 429, 503, 504)}


@router.post("/{name}/select", response_model=SelectResponse, responses=_ERRORS)
async def select(
    name: GrantedDatastore, body: SelectRequest, team: CurrentTeam, selector: SelectorDep
) -> SelectResponse:
    """Ranks the datastore's training examples by gradient similarity to the targets.

    Concurrent requests are micro-batched: their target gradients share forward/backward
    passes and their searches one pass over the features. A repeated request on the same
    datastore version is answered from a cache (`cached: true`).
    """
    return await selector.select(name, body, team)
