"""The request core shared by `LessClient` and `AsyncLessClient`.

Everything that does not wait on I/O lives here, once: configuration from arguments and the
environment, request building, the retry policy, response parsing, and job polling. The two
clients only drive it, one with blocking calls and one with `await`:

    attempts = self._attempts(request)
    for delay in attempts:          # 0 before the first try, then a backoff per retry
        sleep(delay)
        attempts.record(send(request))
    return attempts.result()        # the final response, or the exception for it

Retry policy (see `RetryPolicy.should_retry`):
    * retried: connection errors and timeouts, and 408, 429, 502, 503 and 504 answers;
    * 500 is retried for GET only. A 500 to a POST means the server ran the request and failed
      on it; running the same gradient computation again is unlikely to help and costs GPU
      time (and, for `POST .../jobs`, could start a second job);
    * never retried: other 4xx, which will fail the same way again.
    The wait is the server's Retry-After when it sends one, else capped exponential backoff
    with jitter. A Retry-After above `MAX_RETRY_AFTER` is not shortened (the retry would only be
    refused again) nor slept through: the error is raised at once with its `retry_after`.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from less_wire import (
    FieldCondition,
    Job,
    SearchOptions,
    SelectedExample,
    SelectRequest,
    TargetExample,
    describe_validation_errors,
)

from ._constants import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
    RETRY_JITTER,
    USER_AGENT,
)
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    JobFailedError,
    JobTimeoutError,
    make_status_error,
    parse_retry_after,
)

if TYPE_CHECKING:  # typing-only; the SDK needs nothing beyond httpx and pydantic at run time
    from typing_extensions import Unpack

__all__ = [
    "Attempts",
    "BaseClient",
    "Filter",
    "JobWaiter",
    "RetryPolicy",
    "SelectOptions",
    "Targets",
    "build_select_request",
    "parse_model",
    "parse_probe",
    "parse_result_line",
    "select_body_exclude",
    "transport_error",
]

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)

Targets = Sequence[TargetExample | Mapping[str, Any]]
"""Target examples as models or as plain dicts with the same fields."""

Filter = Mapping[str, FieldCondition | Mapping[str, Any]]
"""Metadata conditions by field name, as `FieldCondition`s or dicts (`{"in": [...]}`)."""

Outcome = httpx.Response | httpx.TransportError


class SelectOptions(TypedDict, total=False):
    """Keyword options of `select` and `create_job`; an omitted one takes its default.

    Attributes:
        k: Number of training examples to return. Exclusive with `fraction`.
        fraction: Share of the pool to return, in (0, 1]. Default 0.05 when `k` is not given.
        checkpoints: Names of the checkpoints to score with. Default: all of the datastore's.
        aggregate: "max" (default) scores an example by its best target subtask, "mean" by
            the average over subtasks.
        return_scores: Whether each selected example carries its score. Default True.
        search: Approximate-index options (`SearchOptions` or a dict: `exact`, `nprobe`,
            `ef_search`, `candidates`); ignored by exact datastores.
        explain: Whether each selected example carries an `Explanation` (score per checkpoint
            and per subtask, closest target, metadata). Default False.
        filter: Only rows whose stored metadata meet every condition are ranked, e.g.
            `{"lang": {"in": ["en", "fr"]}, "n_tokens": FieldCondition(lt=2048)}`; `fraction`
            is then a share of those rows. `less_wire.parse_filter_expressions` builds one
            from `FIELD=VALUE`-style strings.
        token_budget: Take rows best first while their total tokens stay within this budget
            (`k`/`fraction`, if given, still cap the number of rows).
        balance: "subtask" gives each target subtask an equal share of the selection; "none"
            (default) ranks by the aggregate score alone.
        max_similarity: Skip a row whose similarity to a row already selected exceeds this
            (in (-1, 1]): a near-duplicate guard.
        avoid: Examples whose gradient direction to avoid, in the forms `targets` takes:
            score = sim(targets) - avoid_weight * sim(avoid).
        avoid_weight: Weight of the avoid similarity, in [0, 100]. Default 1.
    """

    k: int | None
    fraction: float | None
    checkpoints: Sequence[str] | None
    aggregate: Literal["max", "mean"]
    return_scores: bool
    search: SearchOptions | Mapping[str, Any] | None
    explain: bool
    filter: Filter | None
    token_budget: int | None
    balance: Literal["none", "subtask"]
    max_similarity: float | None
    avoid: Targets | None
    avoid_weight: float


_LEFT_OUT_AT_DEFAULT = ("explain", "balance", "avoid_weight")
"""Select options sent only when they differ from their default: a request that uses none of
them has the body it had before they existed, which an older server (refusing unknown fields)
still takes. The options whose default is None are left out by `exclude_none` already."""


_RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Errors of our own making (a URL with a scheme httpx cannot speak, a malformed request):
# repeating them cannot succeed.
_FATAL_TRANSPORT_ERRORS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before sending a request again.

    Attributes:
        max_retries: Retries after the first attempt; 0 disables retrying.
        initial_delay: Backoff before the first retry, in seconds; doubles per retry.
        max_delay: Cap of the exponential backoff.
        max_retry_after: Longest Retry-After the client waits for; beyond it, it gives up.
        jitter: Fraction by which a backoff is randomly shortened, so clients spread out.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    max_retry_after: float = MAX_RETRY_AFTER
    jitter: float = RETRY_JITTER

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")

    def should_retry(self, method: str, outcome: Outcome) -> bool:
        """Whether this outcome of a request is worth another attempt (see the module doc)."""
        if isinstance(outcome, httpx.TransportError):
            return not isinstance(outcome, _FATAL_TRANSPORT_ERRORS)
        status = outcome.status_code
        return status in _RETRY_STATUSES or (status == 500 and method in _IDEMPOTENT_METHODS)

    def delay(self, retries_done: int, outcome: Outcome, rng: random.Random) -> float | None:
        """Seconds to wait before retry number `retries_done + 1`, or None to give up."""
        if isinstance(outcome, httpx.Response):
            retry_after = parse_retry_after(outcome.headers)
            if retry_after is not None:
                return retry_after if retry_after <= self.max_retry_after else None
        backoff = min(self.initial_delay * 2.0**retries_done, self.max_delay)
        return backoff * (1.0 - self.jitter * rng.random())


_NO_RETRY = RetryPolicy(max_retries=0)
_PROBE_PATHS = ("/healthz", "/readyz")


class Attempts:
    """The retry state of one request, free of I/O so both clients can drive it.

    Iterating yields the delay to sleep before each attempt; `record` must be called with the
    outcome of each attempt; `result` returns the last response or raises for it.
    """

    def __init__(self, policy: RetryPolicy, request: httpx.Request, rng: random.Random) -> None:
        self._policy = policy
        self._request = request
        self._rng = rng
        self._retries = 0
        self._next_delay: float | None = 0.0
        self._outcome: Outcome | None = None

    def __iter__(self) -> Iterator[float]:
        while self._next_delay is not None:
            delay, self._next_delay = self._next_delay, None
            yield delay

    def record(self, outcome: Outcome) -> None:
        """Takes the outcome of the latest attempt and decides whether another one follows."""
        self._outcome = outcome
        method, policy = self._request.method, self._policy
        if self._retries >= policy.max_retries or not policy.should_retry(method, outcome):
            return
        delay = policy.delay(self._retries, outcome, self._rng)
        if delay is None:
            return
        self._retries += 1
        self._next_delay = delay
        if isinstance(outcome, httpx.Response):
            reason = f"status {outcome.status_code}"
        else:
            reason = repr(outcome)
        logger.info(
            "retrying %s %s in %.2f s (retry %d of %d) after %s",
            method,
            self._request.url.path,
            delay,
            self._retries,
            policy.max_retries,
            reason,
        )

    def result(self) -> httpx.Response:
        """The final successful response.

        Raises:
            APITimeoutError: The last attempt timed out.
            APIConnectionError: The last attempt failed to connect or lost the connection.
            APIStatusError: The last answer was a 4xx/5xx (the subclass for its status).
        """
        outcome = self._outcome
        if outcome is None:
            raise RuntimeError("Attempts.result() called before any attempt was recorded")
        if isinstance(outcome, httpx.TransportError):
            raise transport_error(outcome, self._request) from outcome
        if outcome.is_error:
            raise make_status_error(outcome)
        return outcome


def transport_error(exc: httpx.TransportError, request: httpx.Request) -> APIConnectionError:
    """The SDK exception for an httpx transport failure."""
    origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(request, f"request to {origin} timed out: {detail}")
    return APIConnectionError(f"connection to {origin} failed: {detail}", request=request)


class JobWaiter:
    """Polling state for `wait_for_job`, free of I/O so both clients can drive it.

    `observe` takes each polled `Job` and returns the seconds to sleep before the next poll,
    or None once the job succeeded; it raises when the job failed or time ran out.
    """

    def __init__(
        self,
        poll_interval: float,
        timeout: float | None,
        on_progress: Callable[[Job], None] | None,
        clock: Callable[[], float],
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
        self._poll_interval = poll_interval
        self._timeout = timeout
        self._on_progress = on_progress
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self._job: Job | None = None

    @property
    def job(self) -> Job:
        """The latest polled job."""
        if self._job is None:
            raise RuntimeError("JobWaiter.job read before any job was observed")
        return self._job

    def observe(self, job: Job) -> float | None:
        """Records a polled job state.

        Returns:
            Seconds to wait before polling again, or None when the job has succeeded.

        Raises:
            JobFailedError: The job's status is "failed".
            JobTimeoutError: The job is unfinished and the timeout has passed.
        """
        self._job = job
        if self._on_progress is not None:
            self._on_progress(job)
        if job.status == "succeeded":
            return None
        if job.status == "failed":
            raise JobFailedError(job)
        if self._deadline is None:
            return self._poll_interval
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise JobTimeoutError(job, self._timeout or 0.0)
        return min(self._poll_interval, remaining)


def build_select_request(
    targets: Targets | SelectRequest, **options: Unpack[SelectOptions]
) -> SelectRequest:
    """Validates selection arguments into the request body.

    Defaults for omitted options are `SelectRequest`'s, so they are defined once.

    Args:
        targets: Target examples (models or dicts), or a ready `SelectRequest`.
        **options: See `SelectOptions`; not allowed with a ready `SelectRequest`.

    Raises:
        pydantic.ValidationError: (a `ValueError`) for arguments the API would refuse.
        TypeError: An option that is not one of `SelectOptions`, or options given together
            with a ready `SelectRequest`.
    """
    unknown = sorted(set(options) - set(SelectOptions.__annotations__))
    if unknown:
        raise TypeError(f"unexpected selection option(s): {', '.join(unknown)}")
    if isinstance(targets, SelectRequest):
        if options:
            raise TypeError("give options inside the SelectRequest, not next to it")
        return targets
    # None means "not given" for every option, as it does on the wire.
    given: dict[str, Any] = {name: value for name, value in options.items() if value is not None}
    if "avoid" in given:
        given["avoid"] = _target_rows(given["avoid"])
    if "filter" in given:
        given["filter"] = {
            name: condition if isinstance(condition, FieldCondition) else dict(condition)
            for name, condition in given["filter"].items()
        }
    return SelectRequest.model_validate({"targets": _target_rows(targets), **given})


def _target_rows(examples: Targets) -> list[TargetExample | Mapping[str, Any]]:
    """Examples as the request model validates them (models dumped, dicts as they are)."""
    return [
        e.model_dump(exclude_none=True) if isinstance(e, TargetExample) else e for e in examples
    ]


def select_body_exclude(body: SelectRequest) -> set[str]:
    """The fields of a select body left out of the JSON sent (see `_LEFT_OUT_AT_DEFAULT`)."""
    fields = SelectRequest.model_fields
    return {name for name in _LEFT_OUT_AT_DEFAULT if getattr(body, name) == fields[name].default}


def parse_model(model: type[ModelT], response: httpx.Response) -> ModelT:
    """Parses a JSON response body into `model`.

    Raises:
        APIResponseValidationError: The body is not JSON of the model's shape.
    """
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise APIResponseValidationError(
            f"unexpected {model.__name__} from {response.request.url.path}: "
            + describe_validation_errors(exc.errors()),
            response=response,
        ) from exc


def parse_result_line(line: str, lineno: int, response: httpx.Response) -> SelectedExample | None:
    """Parses one line of a job's JSONL result; None for a blank line."""
    if not line.strip():
        return None
    try:
        return SelectedExample.model_validate_json(line)
    except ValidationError as exc:
        raise APIResponseValidationError(
            f"job result line {lineno} is not a selected example: "
            + describe_validation_errors(exc.errors()),
            response=response,
        ) from exc


def _path(*parts: str) -> str:
    # Names and ids are quoted whole, so a "/" in one cannot reach another route.
    return "/" + "/".join(quote(part, safe="") for part in parts)


HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class BaseClient(Generic[HttpT]):
    """Configuration and request building common to the sync and async clients.

    Subclasses set `_http_class` (the httpx client made when none is passed in) and `_sleep`.

    Args:
        base_url: Server root, e.g. "http://host:8000"; defaults to env LESS_BASE_URL, then
            http://127.0.0.1:8000.
        api_key: Sent as `Authorization: Bearer <key>`; defaults to env LESS_API_KEY. Without
            a key no Authorization header is sent.
        timeout: Per-request timeout in seconds, or an `httpx.Timeout`.
        max_retries: Retries after the first attempt (see the module doc for which).
        http_client: An httpx client to send with (e.g. one with a `MockTransport`). The caller
            keeps ownership: `close()` leaves it open. Its default headers are kept; the URL,
            auth header and `timeout` given here take precedence over its own.
    """

    _http_class: Callable[[], HttpT]
    # Class attributes so that tests can replace them with a recorder and a fake clock.
    _sleep: Callable[[float], Any]
    _clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: HttpT | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retry_policy = RetryPolicy(max_retries=max_retries)
        self._rng = random.Random()
        self._owns_http = http_client is None
        self._http: HttpT = self._http_class() if http_client is None else http_client

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @property
    def max_retries(self) -> int:
        """Retries after the first attempt."""
        return self.retry_policy.max_retries

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _request(
        self,
        method: str,
        *path: str,
        body: BaseModel | None = None,
        exclude: set[str] | None = None,
    ) -> httpx.Request:
        content = None
        headers = self._headers()
        if body is not None:
            # exclude_none: optional fields are left out rather than sent as null. Aliases
            # (FieldCondition's `in`) come from the models' serialize_by_alias.
            content = body.model_dump_json(exclude_none=True, exclude=exclude).encode()
            headers["Content-Type"] = "application/json"
        return self._http.build_request(
            method,
            self.base_url + _path(*path),
            content=content,
            headers=headers,
            timeout=self.timeout,
        )

    def _attempts(self, request: httpx.Request) -> Attempts:
        # A probe must answer now: a retried /readyz would hide "not ready" behind backoff.
        probe = request.url.path.rstrip("/").endswith(_PROBE_PATHS)
        return Attempts(_NO_RETRY if probe else self.retry_policy, request, self._rng)

    # One builder per endpoint, so that both clients send exactly the same requests.

    def _list_datastores_request(self) -> httpx.Request:
        return self._request("GET", "v1", "datastores")

    def _get_datastore_request(self, name: str) -> httpx.Request:
        return self._request("GET", "v1", "datastores", name)

    def _get_fields_request(self, name: str) -> httpx.Request:
        return self._request("GET", "v1", "datastores", name, "fields")

    def _select_request(self, datastore: str, body: SelectRequest) -> httpx.Request:
        return self._request(
            "POST",
            "v1",
            "datastores",
            datastore,
            "select",
            body=body,
            exclude=select_body_exclude(body),
        )

    def _create_job_request(self, datastore: str, body: SelectRequest) -> httpx.Request:
        return self._request(
            "POST",
            "v1",
            "datastores",
            datastore,
            "jobs",
            body=body,
            exclude=select_body_exclude(body),
        )

    def _get_job_request(self, job_id: str) -> httpx.Request:
        return self._request("GET", "v1", "jobs", job_id)

    def _job_result_request(self, job_id: str) -> httpx.Request:
        return self._request("GET", "v1", "jobs", job_id, "result")

    def _probe_request(self, name: str) -> httpx.Request:
        return self._request("GET", name)


def parse_probe(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of /healthz or /readyz as a dict (empty when the body is not an object)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
