"""Background selections: create, poll, and download the result as JSONL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from less_wire import ErrorResponse, Job, SelectRequest
from service.deps import CurrentTeam, GrantedDatastore, JobStoreDep, SelectorDep, ServicesDep
from service.errors import ServiceError
from service.jobs import JobLimits

log = logging.getLogger(__name__)
router = APIRouter(tags=["jobs"])

_CHUNK_LINES = 1024


@router.post(
    "/datastores/{name}/jobs",
    response_model=Job,
    status_code=202,
    responses={status: {"model": ErrorResponse} for status in (400, 401, 404, 422, 429)},
)
async def create_job(
    name: GrantedDatastore,
    body: SelectRequest,
    team: CurrentTeam,
    selector: SelectorDep,
    services: ServicesDep,
) -> Job:
    """Queues a selection (e.g. 5 % of a large pool); poll it, then download its JSONL."""
    # Refuse a bad request now, not as a failed job later; off the event loop (a filter over a
    # large pool takes a while).
    prepared = await asyncio.to_thread(selector.prepare, name, body)
    if prepared.engine is not None:  # the token limits too (cheap, bounded by the limit)
        max_tokens = services.registry.max_target_tokens(name)
        await asyncio.to_thread(prepared.engine.tokenize_targets, prepared.examples, max_tokens)
        await asyncio.to_thread(prepared.engine.tokenize_avoid, prepared.avoid, max_tokens)
    limits = JobLimits.from_settings(services.settings)  # 429 beyond the team's job limits
    job = await asyncio.to_thread(services.jobs.create, team.name, name, body, limits)
    services.job_runner.notify()
    log.info(
        "usage team=%s datastore=%s n_targets=%d job=%s", team.name, name, len(body.targets), job.id
    )
    return job


@router.get("/jobs/{job_id}", response_model=Job, responses={404: {"model": ErrorResponse}})
async def get_job(job_id: str, team: CurrentTeam, jobs: JobStoreDep) -> Job:
    """A job's status and progress (0 queued, 0.5 gradients done, 1 finished)."""
    return await asyncio.to_thread(jobs.get, job_id, team.name)


@router.get(
    "/jobs/{job_id}/result",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {}},
            "description": "One SelectedExample per line.",
        },
        404: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
    },
)
async def job_result(job_id: str, team: CurrentTeam, jobs: JobStoreDep) -> StreamingResponse:
    """Streams a succeeded job's selection, one `SelectedExample` JSON per line, best first."""
    job = await asyncio.to_thread(jobs.get, job_id, team.name)
    if job.status != "succeeded":
        raise ServiceError(409, f"job {job_id} is {job.status}; its result is not available")
    path = jobs.result_path(job_id)
    if not path.is_file():  # removed by hand: say so instead of failing mid-stream
        raise ServiceError(404, f"result file of job {job_id} is missing")

    def lines() -> Iterator[str]:
        with path.open(encoding="utf-8") as handle:
            chunk: list[str] = []
            for line in handle:
                chunk.append(line)
                if len(chunk) >= _CHUNK_LINES:
                    yield "".join(chunk)
                    chunk = []
            if chunk:
                yield "".join(chunk)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
