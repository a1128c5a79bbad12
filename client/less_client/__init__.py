"""Python SDK of the LESS selection service: typed sync and async clients, JSONL helpers, a CLI.

    from less_client import LessClient, load_targets_jsonl

    with LessClient() as less:  # LESS_BASE_URL, LESS_API_KEY from the environment
        result = less.select("pool", load_targets_jsonl("targets.jsonl"), fraction=0.05)

The wire models come from `less_wire` (shipped in the same distribution), the API's contract
that the service imports too; they are re-exported here.
"""

from importlib.metadata import version as _package_version

from less_wire import (
    CheckpointContribution,
    CheckpointInfo,
    ClosestTarget,
    DatastoreFields,
    DatastoreList,
    DatastoreSummary,
    ErrorBody,
    ErrorResponse,
    Explanation,
    FieldCondition,
    FieldSummary,
    FieldValueCount,
    InputFileError,
    Job,
    JobStatus,
    Message,
    ProjectorInfo,
    SelectedExample,
    SelectionRecord,
    SelectRequest,
    SelectResponse,
    SubtaskScore,
    TargetExample,
    Timings,
    load_targets_jsonl,
    parse_filter_expressions,
    read_selection,
    write_selected_ids,
    write_selected_rows,
)

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
    InternalServerError,
    JobFailedError,
    JobTimeoutError,
    LessClientError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    exit_status,
)

__version__ = _package_version("less-client")

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
    "CheckpointContribution",
    "CheckpointInfo",
    "ClosestTarget",
    "ConflictError",
    "DatastoreFields",
    "DatastoreList",
    "DatastoreSummary",
    "ErrorBody",
    "ErrorResponse",
    "Explanation",
    "FieldCondition",
    "FieldSummary",
    "FieldValueCount",
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
    "SelectionRecord",
    "ServiceUnavailableError",
    "SubtaskScore",
    "TargetExample",
    "Timings",
    "UnprocessableEntityError",
    "exit_status",
    "load_targets_jsonl",
    "parse_filter_expressions",
    "read_selection",
    "write_selected_ids",
    "write_selected_rows",
]
