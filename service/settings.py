"""Service configuration: datastores, teams and their keys, limits, batching and storage.

Values come, highest priority first, from keyword arguments, ``LESS_*`` environment variables
(nested fields with ``__``, e.g. ``LESS_QUEUE_MAX=512``) and the JSON file named by
``LESS_CONFIG``. API keys are never stored: a team lists the sha256 hex digests of its keys
(``hash_key`` computes one).
"""

from __future__ import annotations

import hashlib
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from less_core.errors import ConfigError
from less_wire import describe_validation_errors

CONFIG_ENV = "LESS_CONFIG"
JOBS_DB = "jobs.sqlite"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# The file given to load_settings, seen by settings_customise_sources without touching os.environ.
_config_file: ContextVar[str | None] = ContextVar("less_config_file", default=None)


def hash_key(key: str) -> str:
    """The sha256 hex digest under which an API key is configured."""
    return hashlib.sha256(key.encode()).hexdigest()


def hex_digests(value: list[str], field: str) -> list[str]:
    """Lower-cased sha256 hex digests; ValueError naming ``field`` for anything else."""
    digests = [v.lower() for v in value]
    bad = [v for v in digests if not _SHA256_HEX.match(v)]
    if bad:
        raise ValueError(f"{field} entries must be 64 hex digits (sha256), got {bad[:1]}")
    return digests


class DatastoreConfig(BaseModel):
    """Where one datastore and the model it was built with live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Field(description="Datastore root (the directory holding CURRENT).")
    model_dir: Path = Field(
        description="Base model checkpoint directory the datastore was built from."
    )


class TeamConfig(BaseModel):
    """A team: its API keys (sha256 hex), granted datastores and rate limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_sha256: list[str] = Field(
        min_length=1, description="sha256 hex digests of the team's keys."
    )
    datastores: list[str] = Field(default_factory=list, description="Datastore names it may use.")
    rate_per_minute: float = Field(default=600.0, gt=0, description="Token-bucket refill rate.")
    burst: int = Field(default=60, ge=1, description="Token-bucket capacity.")

    @field_validator("key_sha256")
    @classmethod
    def _hex_digests(cls, value: list[str]) -> list[str]:
        return hex_digests(value, "key_sha256")


class ServiceSettings(BaseSettings):
    """Everything the service needs to start; validated when built."""

    model_config = SettingsConfigDict(
        env_prefix="LESS_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    datastores: dict[str, DatastoreConfig] = Field(min_length=1)
    teams: dict[str, TeamConfig] = Field(min_length=1)
    max_targets: int = Field(default=64, ge=1, description="Targets per request at most.")
    max_target_tokens: int | None = Field(
        default=None,
        ge=2,
        description="Tokens per target at most; default the datastore's max_length.",
    )
    max_k: int | None = Field(default=None, ge=1, description="Largest k a select may ask for.")
    max_explained_rows: int = Field(
        default=1000,
        ge=1,
        description="Most rows a select may explain (an explanation is ~1 KB of JSON per row); "
        "larger explained selections run as jobs, whose results stream from disk.",
    )
    cache_max_rows: int = Field(
        default=10_000,
        ge=0,
        description="Selections with more rows than this are not kept in the response cache "
        "(it is bounded by entries, so large answers would make it large).",
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body; a larger one is refused (413) while it is read.",
    )
    body_read_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Time allowed for a request's whole body to arrive (408 after it).",
    )
    max_batch_requests: int = Field(
        default=32, ge=1, description="Requests answered by one engine call."
    )
    batch_window_ms: float = Field(
        default=5.0, ge=0, description="Wait after a batch's first request."
    )
    queue_max: int = Field(default=256, ge=1, description="Pending requests before 503 overloaded.")
    request_timeout_s: float = Field(default=60.0, gt=0, description="A select's time limit (504).")
    job_submit_timeout_s: float = Field(
        default=60.0, gt=0, description="How long a job waits for room in the full queue."
    )
    max_pending_selects_per_team: int | None = Field(
        default=32,
        ge=1,
        description="Selects of one team queued or running at once; another is refused with "
        "429 and Retry-After, so one team cannot fill the shared queue (None: no limit).",
    )
    max_jobs_per_team: int | None = Field(
        default=16,
        ge=1,
        description="Unfinished (queued or running) jobs a team may have; another is refused "
        "with 429 and Retry-After (None: no limit).",
    )
    max_job_targets_per_team: int | None = Field(
        default=1024,
        ge=1,
        description="Targets a team's unfinished jobs may hold together (its queued work); "
        "a job beyond it is refused with 429 and Retry-After (None: no limit).",
    )
    retry_after_jobs_s: int = Field(
        default=10, ge=1, description="Retry-After of a 429 for a team's job limits."
    )
    job_max_attempts: int = Field(
        default=3,
        ge=1,
        description="Starts of a job that never finished (the service was killed while it "
        "ran) before it is marked failed instead of being run again.",
    )
    retry_after_busy_s: int = Field(
        default=1, ge=1, description="Retry-After of a 503 for a full queue (clears quickly)."
    )
    retry_after_unavailable_s: int = Field(
        default=5, ge=1, description="Retry-After of a 503 while loading or shutting down."
    )
    jobs_dir: Path | None = Field(
        default=None, description="SQLite + job results; default next to the first datastore."
    )
    cache_size: int = Field(
        default=1024, ge=0, description="LRU entries of answered selects (0: off)."
    )
    log_target_contents: bool = Field(default=False, description="Put target texts in usage logs.")
    reload_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="How often each datastore's CURRENT is checked for a new version, which is "
        "then loaded in the background and swapped in (0: never; restart to pick it up).",
    )
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N.")
    admin_key_sha256: list[str] = Field(
        default_factory=list,
        description="sha256 hex digests of the admin keys (the /v1/admin routes and the "
        "/readyz detail); no team key works there and no admin key works on team routes. "
        "Empty: the admin API answers 401.",
    )
    state_file: Path | None = Field(
        default=None,
        description="JSON file of the datastores and teams changed through the admin API, "
        "written atomically and merged over this configuration at start (the state file wins "
        "for every datastore or team it names); default <jobs dir>/admin-state.json.",
    )
    poll_rate_per_minute: float = Field(
        default=6000.0,
        gt=0,
        description="Refill rate of each team's separate bucket for job polling "
        "(GET /v1/jobs/{id}), which spends no tokens of the team's own rate limit.",
    )
    poll_burst: int = Field(default=600, ge=1, description="Capacity of the polling bucket.")

    @field_validator("admin_key_sha256")
    @classmethod
    def _admin_hex_digests(cls, value: list[str]) -> list[str]:
        return hex_digests(value, "admin_key_sha256")

    @model_validator(mode="after")
    def _grants_exist(self) -> ServiceSettings:
        for team, config in self.teams.items():
            unknown = sorted(set(config.datastores) - set(self.datastores))
            if unknown:
                raise ValueError(f"team {team!r} is granted unknown datastore(s) {unknown}")
        owners: dict[str, str] = {}
        for team, config in self.teams.items():
            for digest in config.key_sha256:
                if owners.setdefault(digest, team) != team:
                    raise ValueError(
                        f"one API key is configured for teams {owners[digest]!r} and {team!r}"
                    )
        shared = sorted(set(self.admin_key_sha256) & set(owners))
        if shared:
            raise ValueError(
                f"an admin key is also a key of team {owners[shared[0]]!r}; use separate keys"
            )
        return self

    @property
    def resolved_jobs_dir(self) -> Path:
        """``jobs_dir``, or ``<parent of the first datastore>/less-jobs``."""
        if self.jobs_dir is not None:
            return self.jobs_dir
        first = next(iter(self.datastores.values()))
        return first.path.parent / "less-jobs"

    @property
    def resolved_state_file(self) -> Path:
        """``state_file``, or ``<resolved jobs dir>/admin-state.json``."""
        return (
            self.state_file
            if self.state_file is not None
            else self.resolved_jobs_dir / ("admin-state.json")
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file.get() or os.environ.get(CONFIG_ENV)
        if path:
            if not Path(path).is_file():
                raise ConfigError(f"{CONFIG_ENV}={path}: no such config file")
            sources.append(JsonConfigSettingsSource(settings_cls, json_file=path))
        return tuple(sources)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> ServiceSettings:
    """Builds settings from a JSON file (or ``LESS_CONFIG``), the environment and overrides.

    Raises:
        ConfigError: A missing file or invalid values, with every problem named.
    """
    token = _config_file.set(None if config_file is None else str(config_file))
    try:
        return ServiceSettings(**overrides)
    except ValidationError as exc:
        problems = describe_validation_errors(exc.errors(), skip_locations=())
        raise ConfigError(f"invalid service settings: {problems}") from None
    finally:
        _config_file.reset(token)
