"""The schemas used the way the service uses them: as FastAPI body and response models.

A stand-in app (not the real service) is driven in-process through `httpx.ASGITransport`, to
show that the models survive FastAPI's request parsing and response serialization, and that
the SDK reads what FastAPI writes, including its own 422s.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from less_client import AsyncLessClient, SelectedExample, UnprocessableEntityError
from less_wire import SelectRequest, SelectResponse, Timings

fastapi = pytest.importorskip("fastapi")


def make_app() -> object:
    app = fastapi.FastAPI()
    seen: list[SelectRequest] = []

    @app.post("/v1/datastores/{name}/select", response_model=SelectResponse)
    def select(name: str, body: SelectRequest) -> SelectResponse:
        seen.append(body)
        count = body.k if body.k is not None else round((body.fraction or 0) * 100)
        return SelectResponse(
            datastore=name,
            datastore_version="v1",
            selected=[
                SelectedExample(
                    id=f"ex-{i}",
                    score=1.0 / (i + 1) if body.return_scores else None,
                    subtask=body.targets[0].subtask,
                )
                for i in range(count)
            ],
            n_candidates=100,
            timings=Timings(gradient_ms=1.0, search_ms=2.0, total_ms=3.0),
        )

    app.state.seen = seen
    return app


def test_sdk_and_fastapi_agree_on_the_wire():
    app = make_app()

    async def scenario() -> tuple[SelectResponse, SelectResponse]:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        async with AsyncLessClient("http://service", http_client=http) as less:
            by_k = await less.select(
                "pool", [{"prompt": "p", "completion": "c", "subtask": "s"}], k=3
            )
            by_default = await less.select(
                "pool", [{"prompt": "p", "completion": "c"}], return_scores=False
            )
        await http.aclose()
        return by_k, by_default

    by_k, by_default = asyncio.run(scenario())
    assert [(s.id, s.subtask) for s in by_k.selected] == [
        ("ex-0", "s"),
        ("ex-1", "s"),
        ("ex-2", "s"),
    ]
    assert by_k.selected[1].score == 0.5
    assert len(by_default.selected) == 5  # 5 % of 100: the default fraction reached the server
    assert {s.score for s in by_default.selected} == {None}
    assert app.state.seen[1].fraction == 0.05


def test_fastapi_validation_errors_become_unprocessable_entity():
    app = make_app()

    async def scenario() -> None:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        # A ready request bypasses the SDK's own check; the server's model refuses the field.
        request = SelectRequest.model_construct(
            targets=[], k=0, fraction=None, checkpoints=None, aggregate="max", return_scores=True
        )
        async with AsyncLessClient("http://service", http_client=http, max_retries=0) as less:
            await less.select("pool", request)

    with pytest.raises(UnprocessableEntityError) as info:
        asyncio.run(scenario())
    assert info.value.code == "invalid_request"
    assert "targets" in info.value.message and "k" in info.value.message
