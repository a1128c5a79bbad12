"""`LessClient` (blocking) and `AsyncLessClient` (asyncio): the same methods over one core.

Both only send requests and sleep; what to send, whether to retry, how long to wait and how to
parse answers is decided once, in `client._base`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from less_wire import (
    DatastoreFields,
    DatastoreList,
    DatastoreSummary,
    Job,
    SelectedExample,
    SelectRequest,
    SelectResponse,
)

from ._base import (
    BaseClient,
    JobWaiter,
    Outcome,
    SelectOptions,
    Targets,
    build_select_request,
    parse_model,
    parse_probe,
    parse_result_line,
    transport_error,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncLessClient", "LessClient"]


class LessClient(BaseClient[httpx.Client]):
    """Blocking client of the LESS selection service.

    Args:
        base_url: Server root; defaults to env LESS_BASE_URL, then http://127.0.0.1:8000.
        api_key: API key sent as a Bearer token; defaults to env LESS_API_KEY.
        timeout: Per-request timeout in seconds, or an `httpx.Timeout`.
        max_retries: Retries after the first attempt, for connection errors, timeouts, 408, 429,
            502, 503, 504 (and 500 on GET), honouring Retry-After.
        http_client: An `httpx.Client` to send with (e.g. one with a `MockTransport`); the
            caller keeps ownership of it and `close()` leaves it open.

    Example:
        >>> with LessClient(api_key="...") as less:
        ...     result = less.select("tulu", [{"prompt": "2+2=", "completion": "4"}], k=100)
        ...     ids = [s.id for s in result.selected]
    """

    _http_class = httpx.Client
    _sleep = staticmethod(time.sleep)

    def close(self) -> None:
        """Closes the connection pool, unless the httpx client was passed in."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> LessClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        attempts = self._attempts(request)
        for delay in attempts:
            if delay:
                self._sleep(delay)
            attempts.record(self._attempt(request, stream))
        return attempts.result()

    def _attempt(self, request: httpx.Request, stream: bool) -> Outcome:
        try:
            response = self._http.send(request, stream=stream)
            if response.is_error:
                response.read()  # the error body; reading also closes a streamed response
        except httpx.TransportError as exc:
            return exc
        return response

    def list_datastores(self) -> list[DatastoreSummary]:
        """Lists the datastores the API key's team may use.

        Returns:
            One summary per datastore (its current version).
        """
        return parse_model(DatastoreList, self._send(self._list_datastores_request())).datastores

    def get_datastore(self, name: str) -> DatastoreSummary:
        """Describes one datastore: version, model, size, checkpoints and projector.

        Raises:
            NotFoundError: No such datastore, or the team is not granted it.
        """
        return parse_model(DatastoreSummary, self._send(self._get_datastore_request(name)))

    def get_fields(self, name: str) -> DatastoreFields:
        """Describes the pool metadata fields a datastore stores: what `filter` can name.

        Returns:
            Each field's kind, missing and distinct counts, range (numbers) and most frequent
            values (strings and bools), for the datastore's current version.

        Raises:
            NotFoundError: No such datastore, or the team is not granted it.
        """
        return parse_model(DatastoreFields, self._send(self._get_fields_request(name)))

    def select(
        self, datastore: str, targets: Targets | SelectRequest, **options: Unpack[SelectOptions]
    ) -> SelectResponse:
        """Selects the training examples most influential on the target examples.

        Args:
            datastore: Name of the datastore to search.
            targets: Target examples, as `TargetExample`s or dicts with `messages` or
                `prompt`+`completion` (and optional `id`, `subtask`). A ready `SelectRequest`
                is sent as it is.
            **options: `k=None, fraction=None, checkpoints=None, aggregate="max",
                return_scores=True, search=None` and the steering options `explain=False,
                filter=None, token_budget=None, balance="none", max_similarity=None,
                avoid=None, avoid_weight=1.0`; see `SelectOptions`. Without `k`, `fraction`
                or `token_budget`, 5 % of the pool is selected.

        Returns:
            The selected IDs in rank order (each with its `explanation` when `explain=True`),
            with the datastore version and timings. For selections of many thousands of rows
            prefer `create_job`.

        Raises:
            pydantic.ValidationError: Arguments the API would refuse (checked before sending).
            APIStatusError: The server refused or failed (see its subclasses).
            APIConnectionError: The server could not be reached.
        """
        body = build_select_request(targets, **options)
        return parse_model(SelectResponse, self._send(self._select_request(datastore, body)))

    def create_job(
        self, datastore: str, targets: Targets | SelectRequest, **options: Unpack[SelectOptions]
    ) -> Job:
        """Starts a selection as a background job; arguments as for `select`.

        Returns:
            The queued job. Follow it with `wait_for_job` and read it with `iter_job_results`.
        """
        body = build_select_request(targets, **options)
        return parse_model(Job, self._send(self._create_job_request(datastore, body)))

    def get_job(self, job_id: str) -> Job:
        """Fetches a job's current status and progress."""
        return parse_model(Job, self._send(self._get_job_request(job_id)))

    def wait_for_job(
        self,
        job_id: str,
        *,
        poll_interval: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Polls a job until it succeeds.

        Args:
            job_id: The job's id.
            poll_interval: Seconds between polls.
            timeout: Seconds to wait at most; None waits as long as the job runs.
            on_progress: Called with every polled `Job`, e.g. to show progress.

        Returns:
            The succeeded job.

        Raises:
            JobFailedError: The job failed; carries the server's error code and message.
            JobTimeoutError: `timeout` passed first (the job keeps running on the server).
        """
        waiter = JobWaiter(poll_interval, timeout, on_progress, self._clock)
        while (delay := waiter.observe(self.get_job(job_id))) is not None:
            self._sleep(delay)
        return waiter.job

    def iter_job_results(self, job_id: str) -> Iterator[SelectedExample]:
        """Streams a succeeded job's selection (JSONL), one example at a time in rank order.

        Raises:
            ConflictError: The job has not succeeded (yet).
            APIResponseValidationError: A line is not a selected example.
        """
        response = self._send(self._job_result_request(job_id), stream=True)
        try:
            for lineno, line in enumerate(response.iter_lines(), start=1):
                if (example := parse_result_line(line, lineno, response)) is not None:
                    yield example
        except httpx.TransportError as exc:
            raise transport_error(exc, response.request) from exc
        finally:
            response.close()

    def job_results(self, job_id: str) -> list[SelectedExample]:
        """A succeeded job's whole selection as a list, in rank order."""
        return list(self.iter_job_results(job_id))

    def healthz(self) -> dict[str, Any]:
        """Checks that the server is alive (not retried). Returns its JSON body."""
        return parse_probe(self._send(self._probe_request("healthz")))

    def readyz(self) -> dict[str, Any]:
        """Checks that the model and indexes are loaded (not retried). Returns its JSON body.

        Raises:
            ServiceUnavailableError: The server is up but not ready.
        """
        return parse_probe(self._send(self._probe_request("readyz")))


class AsyncLessClient(BaseClient[httpx.AsyncClient]):
    """Asyncio client of the LESS selection service; the same methods as `LessClient`, awaited.

    Args:
        base_url: Server root; defaults to env LESS_BASE_URL, then http://127.0.0.1:8000.
        api_key: API key sent as a Bearer token; defaults to env LESS_API_KEY.
        timeout: Per-request timeout in seconds, or an `httpx.Timeout`.
        max_retries: Retries after the first attempt (see `LessClient`).
        http_client: An `httpx.AsyncClient` to send with; the caller keeps ownership of it.
    """

    _http_class = httpx.AsyncClient
    _sleep = staticmethod(asyncio.sleep)

    async def close(self) -> None:
        """Closes the connection pool, unless the httpx client was passed in."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncLessClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        attempts = self._attempts(request)
        for delay in attempts:
            if delay:
                await self._sleep(delay)
            attempts.record(await self._attempt(request, stream))
        return attempts.result()

    async def _attempt(self, request: httpx.Request, stream: bool) -> Outcome:
        try:
            response = await self._http.send(request, stream=stream)
            if response.is_error:
                await response.aread()
        except httpx.TransportError as exc:
            return exc
        return response

    async def list_datastores(self) -> list[DatastoreSummary]:
        """Like `LessClient.list_datastores`."""
        response = await self._send(self._list_datastores_request())
        return parse_model(DatastoreList, response).datastores

    async def get_datastore(self, name: str) -> DatastoreSummary:
        """Like `LessClient.get_datastore`."""
        return parse_model(DatastoreSummary, await self._send(self._get_datastore_request(name)))

    async def get_fields(self, name: str) -> DatastoreFields:
        """Like `LessClient.get_fields`."""
        return parse_model(DatastoreFields, await self._send(self._get_fields_request(name)))

    async def select(
        self, datastore: str, targets: Targets | SelectRequest, **options: Unpack[SelectOptions]
    ) -> SelectResponse:
        """Like `LessClient.select`."""
        body = build_select_request(targets, **options)
        return parse_model(SelectResponse, await self._send(self._select_request(datastore, body)))

    async def create_job(
        self, datastore: str, targets: Targets | SelectRequest, **options: Unpack[SelectOptions]
    ) -> Job:
        """Like `LessClient.create_job`."""
        body = build_select_request(targets, **options)
        return parse_model(Job, await self._send(self._create_job_request(datastore, body)))

    async def get_job(self, job_id: str) -> Job:
        """Like `LessClient.get_job`."""
        return parse_model(Job, await self._send(self._get_job_request(job_id)))

    async def wait_for_job(
        self,
        job_id: str,
        *,
        poll_interval: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Like `LessClient.wait_for_job`."""
        waiter = JobWaiter(poll_interval, timeout, on_progress, self._clock)
        while (delay := waiter.observe(await self.get_job(job_id))) is not None:
            await self._sleep(delay)
        return waiter.job

    async def iter_job_results(self, job_id: str) -> AsyncIterator[SelectedExample]:
        """Like `LessClient.iter_job_results`, as an async iterator."""
        response = await self._send(self._job_result_request(job_id), stream=True)
        lineno = 0
        try:
            async for line in response.aiter_lines():
                lineno += 1
                if (example := parse_result_line(line, lineno, response)) is not None:
                    yield example
        except httpx.TransportError as exc:
            raise transport_error(exc, response.request) from exc
        finally:
            await response.aclose()

    async def job_results(self, job_id: str) -> list[SelectedExample]:
        """Like `LessClient.job_results`."""
        return [example async for example in self.iter_job_results(job_id)]

    async def healthz(self) -> dict[str, Any]:
        """Like `LessClient.healthz`."""
        return parse_probe(await self._send(self._probe_request("healthz")))

    async def readyz(self) -> dict[str, Any]:
        """Like `LessClient.readyz`."""
        return parse_probe(await self._send(self._probe_request("readyz")))
