"""Request and response models of the HTTP API, shared by the service and the SDK.

The FastAPI service uses these models for its request bodies and `response_model`s, so this
module is the single source of truth for what goes over the wire. It depends on pydantic only.
Targets are validated here, once: the service turns a parsed `TargetExample` into the library's
example type without checking it again.

Request models forbid unknown fields (a misspelt option is a 422, not silently ignored), take
integers strictly (`k: true` is not k = 1), refuse NaN and infinities, and refuse text that is
not plain Unicode (lone surrogates, NUL characters) in every string they carry, so that nothing
past validation (tokenizer, job store, logs) meets it. Response models ignore unknown fields so
that an older SDK keeps working against a newer server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

__all__ = [
    "DEFAULT_FRACTION",
    "CheckpointInfo",
    "DatastoreList",
    "DatastoreSummary",
    "ErrorBody",
    "Explanation",
    "CheckpointContribution",
    "ClosestTarget",
    "FieldCondition",
    "FieldSummary",
    "FieldValueCount",
    "DatastoreFields",
    "MetadataValue",
    "SubtaskScore",
    "ErrorResponse",
    "Job",
    "JobStatus",
    "Message",
    "ProjectorInfo",
    "SearchOptions",
    "SelectRequest",
    "SelectResponse",
    "SelectedExample",
    "SelectionRecord",
    "TargetExample",
    "Timings",
]

MAX_FILTER_FIELDS = 16
"""Most metadata fields one filter may name."""
MAX_FILTER_VALUES = 1024
"""Most values one `in` / `not_in` condition may list."""

DEFAULT_FRACTION = 0.05
"""Share of the pool selected when a request gives neither `k` nor `fraction` (the paper's 5 %)."""

JobStatus = Literal["queued", "running", "succeeded", "failed"]


def _plain_text(value: str) -> str:
    """``value`` if it is text every consumer can take: UTF-8 encodable, no NUL character."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON "\\ud800" without its pair) is no Unicode character.
        raise ValueError("must be valid Unicode text (it contains a lone surrogate)") from None
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[
    str,
    AfterValidator(_plain_text),
    # Lone surrogates cannot be written in a JSON schema (its strings are Unicode); NUL can.
    Field(json_schema_extra={"pattern": "^[^\\u0000]*$"}),
]
"""A request string: valid Unicode (encodable as UTF-8) and free of NUL characters."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Message(_Request):
    """One chat turn of a target example."""

    role: Literal["system", "user", "assistant"]
    content: Text


_NOT_BLANK = r"\S"  # the JSON schema's "has non-whitespace content"
# The one-of rule in the OpenAPI schema: a chat (`messages` with an assistant turn that has
# content; `prompt`/`completion` absent or null) or a pair (`prompt` and a non-blank
# `completion`; `messages` absent or null). The model validator below enforces the same rule.
_ONE_FORMAT_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "title": "chat",
            "required": ["messages"],
            "properties": {
                "messages": {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": {"type": "string", "pattern": _NOT_BLANK},
                        },
                    },
                },
                "prompt": {"type": "null"},
                "completion": {"type": "null"},
            },
        },
        {
            "title": "prompt and completion",
            "required": ["prompt", "completion"],
            "properties": {
                "messages": {"type": "null"},
                "prompt": {"type": "string"},
                "completion": {"type": "string", "pattern": _NOT_BLANK},
            },
        },
    ]
}


class TargetExample(_Request):
    """A few-shot example of the task to select training data for.

    Give either `messages` (a chat, at least one assistant turn with content) or `prompt` and
    `completion`. The gradient is taken on the assistant turns, or on the completion.
    """

    model_config = ConfigDict(json_schema_extra=_ONE_FORMAT_SCHEMA)

    id: Text | None = None
    messages: list[Message] | None = None
    prompt: Text | None = None
    completion: Text | None = None
    subtask: Text | None = Field(
        default=None, description="Group label; with aggregate='max' each subtask scores alone."
    )

    @model_validator(mode="after")
    def _one_format(self) -> TargetExample:
        has_chat = self.messages is not None
        has_pair = self.prompt is not None or self.completion is not None
        if has_chat and has_pair:
            raise ValueError("give either 'messages' or 'prompt' and 'completion', not both")
        if has_chat:
            if not any(m.role == "assistant" and m.content.strip() for m in self.messages or []):
                raise ValueError(
                    "'messages' needs at least one assistant turn with non-empty content"
                )
        elif self.prompt is None or self.completion is None:
            raise ValueError("give either 'messages' or both 'prompt' and 'completion'")
        elif not self.completion.strip():
            raise ValueError("'completion' must not be empty")
        return self


class SearchOptions(_Request):
    """How to search a datastore that has an approximate index (ignored by exact datastores).

    Results are always re-ranked with exact scores from the stored features: the options
    trade recall (which rows are considered) against time, never score accuracy.
    """

    exact: StrictBool = Field(
        default=False, description="Scan every row exactly even when an approximate index exists."
    )
    nprobe: StrictInt | None = Field(
        default=None, ge=1, le=65536, description="IVF lists to visit (default: the index's)."
    )
    ef_search: StrictInt | None = Field(
        default=None, ge=1, le=65536, description="HNSW search breadth (default: the index's)."
    )
    candidates: float = Field(
        default=2.0,
        ge=1.0,
        le=100.0,
        strict=True,
        allow_inf_nan=False,
        description="Rows fetched from the index per wanted row, before exact re-ranking.",
    )


MetadataValue = str | int | float | bool
"""A value of a pool metadata field (as stored at build time)."""

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A float that is a number: JSON's 1e400 parses as infinity, which no stored value equals and
which JSON cannot write back (a saved job request must read back as it was sent)."""
FilterValue = StrictStr | StrictInt | StrictBool | FiniteFloat


class FieldCondition(_Request):
    """A condition on one pool metadata field; all the conditions given must hold.

    `eq`, `in` and `not_in` compare values exactly (a string field against strings, a number
    field against numbers); `gt`/`gte`/`lt`/`lte` bound a number field. Rows missing the field
    fail every condition except `not_in`.
    """

    # On the wire the set condition is `in` (a Python keyword, hence the attribute `in_`).
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    eq: FilterValue | None = Field(default=None, description="The field equals this value.")
    in_: list[FilterValue] | None = Field(
        default=None,
        alias="in",
        min_length=1,
        max_length=MAX_FILTER_VALUES,
        description="The field equals one of these values.",
    )
    not_in: list[FilterValue] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_FILTER_VALUES,
        description="The field is missing or equals none of these values.",
    )
    gt: float | None = Field(default=None, allow_inf_nan=False, description="field > gt")
    gte: float | None = Field(default=None, allow_inf_nan=False, description="field >= gte")
    lt: float | None = Field(default=None, allow_inf_nan=False, description="field < lt")
    lte: float | None = Field(default=None, allow_inf_nan=False, description="field <= lte")

    @model_validator(mode="after")
    def _something(self) -> FieldCondition:
        if all(
            v is None
            for v in (self.eq, self.in_, self.not_in, self.gt, self.gte, self.lt, self.lte)
        ):
            raise ValueError("a condition needs one of eq, in, not_in, gt, gte, lt, lte")
        return self


class SelectRequest(_Request):
    """Body of `POST /v1/datastores/{name}/select` and `POST /v1/datastores/{name}/jobs`."""

    # In the OpenAPI schema too: not both `k` and `fraction` (a null one counts as absent).
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["k", "fraction"],
                "properties": {"k": {"type": "integer"}, "fraction": {"type": "number"}},
            }
        }
    )

    targets: list[TargetExample] = Field(min_length=1)
    k: StrictInt | None = Field(
        default=None, ge=1, description="Number of training examples to return."
    )
    fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        strict=True,
        allow_inf_nan=False,
        description=f"Share of the pool to return; {DEFAULT_FRACTION} when k is not given.",
    )
    checkpoints: list[Text] | None = Field(
        default=None, min_length=1, description="Checkpoint names to score with; all if omitted."
    )
    aggregate: Literal["max", "mean"] = Field(
        default="max", description="How scores against several subtasks combine."
    )
    return_scores: StrictBool = True
    search: SearchOptions | None = Field(
        default=None, description="Approximate-index search options (default: SearchOptions())."
    )
    explain: StrictBool = Field(
        default=False,
        description="Explain each selected row: its score per checkpoint and per subtask, the "
        "target it is closest to, and its metadata.",
    )
    filter: dict[Text, FieldCondition] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_FILTER_FIELDS,
        description="Only rows whose stored metadata meet every condition are ranked; the "
        "fraction is a share of those rows.",
    )
    token_budget: StrictInt | None = Field(
        default=None,
        ge=1,
        description="Take rows best first while their total tokens stay within this budget "
        "(k or fraction, if given, still cap the number of rows).",
    )
    balance: Literal["none", "subtask"] = Field(
        default="none",
        description="'subtask': an equal share per subtask, round robin over each subtask's "
        "own ranking, no row twice; 'none': one ranking by the aggregate score.",
    )
    max_similarity: float | None = Field(
        default=None,
        gt=-1,
        le=1,
        strict=True,
        allow_inf_nan=False,
        description="Near-duplicate guard: skip a row whose feature similarity (checkpoint-"
        "weighted cosine) to a row already selected exceeds this.",
    )
    avoid: list[TargetExample] | None = Field(
        default=None,
        min_length=1,
        description="Examples whose gradient direction to avoid: score = sim(targets) - "
        "avoid_weight * sim(avoid).",
    )
    avoid_weight: float = Field(
        default=1.0,
        ge=0,
        le=100,
        strict=True,
        allow_inf_nan=False,
        description="Weight of the avoid similarity in the score.",
    )

    @model_validator(mode="after")
    def _size(self) -> SelectRequest:
        if self.k is not None and self.fraction is not None:
            raise ValueError("give either 'k' or 'fraction', not both")
        if self.k is None and self.fraction is None and self.token_budget is None:
            # Set here rather than as a field default so that the body (and the echo of it in
            # logs) always states the size that was asked for.
            self.fraction = DEFAULT_FRACTION
        return self


class CheckpointContribution(_Response):
    """A checkpoint's share of a row's score: weight · <f_c(z), q_c> (avoid term included)."""

    checkpoint: str
    weight: float
    score: float


class SubtaskScore(_Response):
    """A row's score against one subtask's targets (avoid term included)."""

    subtask: str
    score: float


class ClosestTarget(_Response):
    """The single target example most similar to a row (checkpoint-weighted cosine)."""

    index: int = Field(ge=0, description="Position of the target in the request's targets.")
    id: str | None
    subtask: str
    similarity: float


class Explanation(_Response):
    """Why a row was selected (`explain: true`).

    `checkpoints` sum to the row's score under the subtask that ranked it (`subtask`), and
    `subtasks` hold its score against each subtask. `avoid_similarity` is its similarity to the
    avoid examples before `avoid_weight` (null without `avoid`).
    """

    checkpoints: list[CheckpointContribution]
    subtasks: list[SubtaskScore]
    closest_target: ClosestTarget
    avoid_similarity: float | None = None
    n_tokens: int | None = None
    metadata: dict[str, MetadataValue | None] = Field(default_factory=dict)
    preview: str | None = None


class SelectedExample(_Response):
    """One selected training example, in rank order; also one line of a job's JSONL result."""

    id: str
    score: float | None
    subtask: str | None
    explanation: Explanation | None = None


class SelectionRecord(_Response):
    """One line of a selection file (`less-index select`, `less-select`, a job's result).

    A `SelectedExample` with its `rank` (1 for the best). Written with the pool row's fields as
    well when a selection is joined against the pool.
    """

    rank: int = Field(ge=1)
    id: str
    score: float | None
    subtask: str | None
    explanation: Explanation | None = None


class Timings(_Response):
    """Milliseconds waited: queued, then the wall time of its micro-batch's gradients and search."""

    gradient_ms: float
    search_ms: float
    queue_ms: float = 0
    total_ms: float


class SelectResponse(_Response):
    """Result of a selection: training example IDs ranked by influence on the targets."""

    datastore: str
    datastore_version: str
    selected: list[SelectedExample]
    n_candidates: int = Field(description="Rows ranked: the pool, or the rows passing the filter.")
    n_tokens: int | None = Field(
        default=None, description="Total tokens of the selected rows (when the datastore has them)."
    )
    timings: Timings
    cached: bool = False


class CheckpointInfo(_Response):
    """A checkpoint of the warmup run that the datastore holds features for."""

    name: str
    lr: float
    weight: float


class ProjectorInfo(_Response):
    """The random projection the datastore's features were made with."""

    kind: str
    dim: int
    seed: int
    scope: str


class DatastoreSummary(_Response):
    """What `GET /v1/datastores/{name}` tells about one datastore's published version."""

    name: str
    version: str
    model_id: str
    n_examples: int
    checkpoints: list[CheckpointInfo]
    projector: ProjectorInfo
    feature_dtype: str
    created_at: str
    n_shards: int | None = None
    index_factory: str | None = None
    size_bytes: int | None = Field(default=None, description="Bytes on disk of this version.")
    fields: list[str] = Field(
        default_factory=list, description="Pool metadata fields stored (filterable)."
    )


class FieldValueCount(_Response):
    """How many rows of the pool hold one value of a field."""

    value: MetadataValue
    count: int


class FieldSummary(_Response):
    """A pool metadata field stored in the datastore (filterable, shown in explanations)."""

    name: str
    kind: Literal["string", "int", "float", "bool"]
    n_missing: int
    n_distinct: int
    min: float | None = None
    max: float | None = None
    top_values: list[FieldValueCount] = Field(
        default_factory=list, description="The most frequent values (string and bool fields)."
    )


class DatastoreFields(_Response):
    """Body of `GET /v1/datastores/{name}/fields`."""

    datastore: str
    version: str
    n_examples: int
    fields: list[FieldSummary]


class DatastoreList(_Response):
    """Body of `GET /v1/datastores`: the datastores the caller's team may use."""

    datastores: list[DatastoreSummary]


class ErrorBody(_Response):
    """Machine-readable `code` (an `ErrorCode` value) and a human-readable `message`.

    `code` is a plain string so that an SDK keeps working when a newer server adds codes.
    """

    code: str
    message: str


class ErrorResponse(_Response):
    """Body of every error answer: `{"error": {"code": ..., "message": ...}}`."""

    error: ErrorBody


class Job(_Response):
    """A selection running in the background (`POST /v1/datastores/{name}/jobs`)."""

    id: str
    datastore: str
    status: JobStatus
    progress: float = Field(ge=0, le=1)
    created_at: str
    updated_at: str
    n_selected: int | None = None
    error: ErrorBody | None = None
