"""The wire contract of the LESS selection service: what crosses between the service and its users.

Request/response models (`models`), error codes with their HTTP statuses (`errors`), the
target and selection file formats (`files`) and the CLI exit statuses (`exit_codes`). Depends
on pydantic only: the service imports it without the SDK's HTTP client, the SDK without torch.
"""

from .admin import (
    AdminDatastore,
    AdminDatastoreAdd,
    AdminDatastoreList,
    AdminReadiness,
    AdminTeam,
    AdminTeamAdd,
    AdminTeamList,
    IssuedKey,
    Readiness,
)
from .errors import ErrorCode, code_for_status, describe_validation_errors
from .exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE
from .files import (
    InputFileError,
    load_targets_jsonl,
    read_selection,
    selection_records,
    write_selected_ids,
    write_selected_rows,
)
from .models import (
    DEFAULT_FRACTION,
    CheckpointInfo,
    DatastoreList,
    DatastoreSummary,
    ErrorBody,
    ErrorResponse,
    Job,
    JobStatus,
    Message,
    ProjectorInfo,
    SearchOptions,
    SelectedExample,
    SelectionRecord,
    SelectRequest,
    SelectResponse,
    TargetExample,
    Timings,
)

__all__ = [
    "DEFAULT_FRACTION",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "AdminDatastore",
    "AdminDatastoreAdd",
    "AdminDatastoreList",
    "AdminReadiness",
    "AdminTeam",
    "AdminTeamAdd",
    "AdminTeamList",
    "CheckpointInfo",
    "DatastoreList",
    "DatastoreSummary",
    "ErrorBody",
    "ErrorCode",
    "ErrorResponse",
    "InputFileError",
    "IssuedKey",
    "Job",
    "JobStatus",
    "Message",
    "ProjectorInfo",
    "Readiness",
    "SearchOptions",
    "SelectRequest",
    "SelectResponse",
    "SelectedExample",
    "SelectionRecord",
    "TargetExample",
    "Timings",
    "code_for_status",
    "describe_validation_errors",
    "load_targets_jsonl",
    "read_selection",
    "selection_records",
    "write_selected_ids",
    "write_selected_rows",
]
