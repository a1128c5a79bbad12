"""Python SDK of the LESS selection service: typed sync and async clients, JSONL helpers, a CLI.

    from client import LessClient, load_targets_jsonl

    with LessClient() as less:  # LESS_BASE_URL, LESS_API_KEY from the environment
        result = less.select("pool", load_targets_jsonl("targets.jsonl"), fraction=0.05)

The wire models in `client.schemas` are the API's contract; the service imports them too.
"""

from ._base import RetryPolicy, SelectOptions
from ._client import AsyncLessClient, LessClient
from ._constants import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
)
from ._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InputFileError,
    InternalServerError,
    JobFailedError,
    JobTimeoutError,
    LessClientError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from .io import load_targets_jsonl, write_selected_ids, write_selected_rows
from .schemas import (
    CheckpointInfo,
    DatastoreList,
    DatastoreSummary,
    ErrorBody,
    ErrorResponse,
    Job,
    JobStatus,
    Message,
    ProjectorInfo,
    SelectedExample,
    SelectRequest,
    SelectResponse,
    TargetExample,
    Timings,
)

__version__ = "0.1.0"

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncLessClient",
    "AuthenticationError",
    "BadRequestError",
    "CheckpointInfo",
    "ConflictError",
    "DatastoreList",
    "DatastoreSummary",
    "ErrorBody",
    "ErrorResponse",
    "InputFileError",
    "InternalServerError",
    "Job",
    "JobFailedError",
    "JobStatus",
    "JobTimeoutError",
    "LessClient",
    "LessClientError",
    "Message",
    "NotFoundError",
    "PermissionDeniedError",
    "ProjectorInfo",
    "RateLimitError",
    "RetryPolicy",
    "SelectOptions",
    "SelectRequest",
    "SelectResponse",
    "SelectedExample",
    "ServiceUnavailableError",
    "TargetExample",
    "Timings",
    "UnprocessableEntityError",
    "load_targets_jsonl",
    "write_selected_ids",
    "write_selected_rows",
]
