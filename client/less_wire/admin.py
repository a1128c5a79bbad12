"""Bodies of the admin API (``/v1/admin/...``), key rotation and the readiness detail.

Keys are shown once, in the `IssuedKey` answer that creates them; the service keeps only their
sha256 digests. A key is named afterwards by its `key_id`, the first 12 hex digits of that
digest (enough to tell a team's keys apart, useless for authenticating).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "NAME_PATTERN",
    "AdminDatastore",
    "AdminDatastoreAdd",
    "AdminDatastoreList",
    "AdminReadiness",
    "AdminTeam",
    "AdminTeamAdd",
    "AdminTeamList",
    "IssuedKey",
    "Readiness",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Datastore and team names the admin API accepts (no slashes, no leading dot)."""

Source = Literal["config", "state"]
Status = Literal["ready", "degraded", "loading", "unavailable"]


class _AdminRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _AdminResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AdminDatastoreAdd(_AdminRequest):
    """A datastore to serve from now on; opened and loaded in the background."""

    name: str = Field(pattern=NAME_PATTERN, description="Name teams will use in their paths.")
    path: str = Field(min_length=1, description="Datastore root (the directory holding CURRENT).")
    model_dir: str = Field(min_length=1, description="Base model it was built from.")


class AdminDatastore(_AdminResponse):
    """A datastore as the admin sees it: where it lives, its state and who may use it."""

    name: str
    path: str
    model_dir: str
    state: str = Field(description="loading, ready or 'failed: <reason>'.")
    granted_to: list[str] = Field(description="Teams granted it.")
    source: Source = Field(description="config: from the settings; state: set through the API.")


class AdminDatastoreList(_AdminResponse):
    datastores: list[AdminDatastore]


class AdminTeamAdd(_AdminRequest):
    """A new team; its first key is returned once in the answer."""

    name: str = Field(pattern=NAME_PATTERN)
    datastores: list[str] = Field(default_factory=list, description="Datastores granted.")
    rate_per_minute: float = Field(default=600.0, gt=0, description="Token-bucket refill rate.")
    burst: int = Field(default=60, ge=1, description="Token-bucket capacity.")


class AdminTeam(_AdminResponse):
    name: str
    datastores: list[str]
    key_ids: list[str] = Field(description="First 12 hex digits of each key's sha256.")
    rate_per_minute: float
    burst: int
    source: Source


class AdminTeamList(_AdminResponse):
    teams: list[AdminTeam]


class IssuedKey(_AdminResponse):
    """A new API key: shown this once, stored by the service only as its sha256."""

    team: str
    key: str
    key_id: str
    revoked_key_id: str | None = Field(
        default=None, description="The key this one replaces (rotation), now revoked."
    )


class Readiness(_AdminResponse):
    """``GET /readyz`` without the admin key: ready or not, nothing else."""

    ready: bool


class AdminReadiness(Readiness):
    """``GET /readyz`` with the admin key: each datastore's state.

    ``status``: ``ready`` (all ready), ``degraded`` (some failed, at least one serves),
    ``loading`` (start-up loading not finished) or ``unavailable`` (none serves).
    """

    status: Status
    datastores: dict[str, str]
