"""Run-time changes to datastores, teams, grants and keys (the admin API), and their persistence.

The changes go to a JSON state file (``ServiceSettings.resolved_state_file``, by default
``<jobs dir>/admin-state.json``) written atomically (temporary file, fsync, rename, fsync of the
directory) before they take effect. At start the state file is merged over the configuration:
each datastore or team the state file names is taken from it (``null``: removed), the others
from the configuration. So the state file wins for whatever was changed through the API, and
the configuration file still decides everything the API never touched; to hand a team or
datastore back to the configuration, delete its entry from the state file (service stopped).

Only sha256 digests of keys are stored, in the state file as in the settings.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from less_core.errors import ConfigError
from less_wire import (
    AdminDatastore,
    AdminDatastoreAdd,
    AdminTeam,
    AdminTeamAdd,
    IssuedKey,
    describe_validation_errors,
)
from service.auth import KeyRing, RateLimiter
from service.errors import ServiceError, not_found
from service.registry import Registry
from service.settings import DatastoreConfig, ServiceSettings, TeamConfig, hash_key

log = logging.getLogger(__name__)

STATE_FORMAT: Literal[1] = 1
KEY_ID_HEX = 12
_KEY_BYTES = 32
V = TypeVar("V")


def key_id(digest: str) -> str:
    """How a key is named in the admin API: the first hex digits of its sha256."""
    return digest[:KEY_ID_HEX]


def new_key() -> tuple[str, str]:
    """A fresh random API key and its sha256 digest."""
    key = "less-" + secrets.token_urlsafe(_KEY_BYTES)
    return key, hash_key(key)


class AdminState(BaseModel):
    """The state file: datastores and teams set through the API (None: removed)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = STATE_FORMAT
    datastores: dict[str, DatastoreConfig | None] = Field(default_factory=dict)
    teams: dict[str, TeamConfig | None] = Field(default_factory=dict)


def load_state(path: Path) -> AdminState:
    """The state file's contents; an empty state when it does not exist.

    Raises:
        ConfigError: unreadable or invalid (the service refuses to start rather than forget).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return AdminState()
    except OSError as exc:
        raise ConfigError(f"admin state file {path}: {exc}") from None
    try:
        return AdminState.model_validate_json(text)
    except ValidationError as exc:
        problems = describe_validation_errors(exc.errors(), skip_locations=())
        raise ConfigError(f"admin state file {path} is invalid: {problems}") from None


def save_state(path: Path, state: AdminState) -> None:
    """Writes the state file atomically: readers and a crash see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(state.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def merge(settings: ServiceSettings, state: AdminState) -> ServiceSettings:
    """The settings with the state file's datastores and teams applied (see the module doc).

    Grants of datastores that no longer exist are dropped with a warning. The jobs directory
    and the state file stay where the configuration puts them, whatever datastores remain.

    Raises:
        ConfigError: one key digest would belong to two teams, or to a team and the admin.
    """
    datastores = dict(settings.datastores)
    for name, ds in state.datastores.items():
        if ds is None:
            datastores.pop(name, None)
        else:
            datastores[name] = ds
    teams = dict(settings.teams)
    for name, team in state.teams.items():
        if team is None:
            teams.pop(name, None)
        else:
            teams[name] = team
    for name, team in list(teams.items()):
        unknown = sorted(set(team.datastores) - set(datastores))
        if unknown:
            log.warning("team %r: grants of removed datastore(s) %s dropped", name, unknown)
            kept = [d for d in team.datastores if d in datastores]
            teams[name] = team.model_copy(update={"datastores": kept})
    owners: dict[str, str] = {d: "the admin" for d in settings.admin_key_sha256}
    for name, team in teams.items():
        for digest in team.key_sha256:
            if owners.setdefault(digest, name) != name:
                raise ConfigError(
                    f"after merging {settings.resolved_state_file}: key {key_id(digest)} "
                    f"belongs to {owners[digest]!r} and team {name!r}"
                )
    return settings.model_copy(
        update={
            "datastores": datastores,
            "teams": teams,
            "jobs_dir": settings.resolved_jobs_dir,
            "state_file": settings.resolved_state_file,
        }
    )


def effective_settings(settings: ServiceSettings) -> tuple[ServiceSettings, AdminState]:
    """The configuration merged with its state file, and that state."""
    state = load_state(settings.resolved_state_file)
    merged = merge(settings, state)
    if state.datastores or state.teams:
        log.info(
            "admin state %s applied: %d datastore and %d team entries",
            settings.resolved_state_file,
            len(state.datastores),
            len(state.teams),
        )
    return merged, state


def _conflict(message: str) -> ServiceError:
    return ServiceError(409, message)


class Access:
    """Applies admin changes: persists them first, then updates the key ring, the rate
    limiter and the registry. One change at a time."""

    def __init__(
        self,
        settings: ServiceSettings,
        state: AdminState,
        keyring: KeyRing,
        limiter: RateLimiter,
        registry: Registry,
    ):
        self._path = settings.resolved_state_file
        self._state = state
        self._datastores = dict(settings.datastores)
        self._teams = dict(settings.teams)
        self._keyring = keyring
        self._limiter = limiter
        self._registry = registry
        self._lock = threading.Lock()
        self._retry_after = settings.retry_after_unavailable_s

    # -- views -------------------------------------------------------------------------------

    def datastores(self) -> list[AdminDatastore]:
        states = self._registry.states()
        with self._lock:
            return [
                AdminDatastore(
                    name=name,
                    path=str(ds.path),
                    model_dir=str(ds.model_dir),
                    state=states.get(name, "loading"),
                    granted_to=sorted(t for t, c in self._teams.items() if name in c.datastores),
                    source="state" if name in self._state.datastores else "config",
                )
                for name, ds in self._datastores.items()
            ]

    def teams(self) -> list[AdminTeam]:
        with self._lock:
            return [self._team_view(name) for name in self._teams]

    def _team_view(self, name: str) -> AdminTeam:
        team = self._teams[name]
        return AdminTeam(
            name=name,
            datastores=list(team.datastores),
            key_ids=[key_id(d) for d in team.key_sha256],
            rate_per_minute=team.rate_per_minute,
            burst=team.burst,
            source="state" if name in self._state.teams else "config",
        )

    # -- datastores --------------------------------------------------------------------------

    def add_datastore(self, body: AdminDatastoreAdd) -> AdminDatastore:
        """Persists the datastore and starts loading it; 409 if the name is taken."""
        self._require_loaded()
        config = DatastoreConfig(path=Path(body.path), model_dir=Path(body.model_dir))
        with self._lock:
            if body.name in self._datastores:
                raise _conflict(f"datastore {body.name!r} exists")
            self._commit(datastores={body.name: config})
            self._registry.add(body.name, config)
        log.info("admin: datastore %r added (%s)", body.name, config.path)
        return next(d for d in self.datastores() if d.name == body.name)

    def remove_datastore(self, name: str) -> list[str]:
        """Removes it and every grant of it; returns the teams that had it."""
        self._require_loaded()
        with self._lock:
            if name not in self._datastores:
                raise not_found(f"datastore {name!r} not found")
            holders = sorted(t for t, c in self._teams.items() if name in c.datastores)
            teams = {
                t: self._teams[t].model_copy(
                    update={"datastores": [d for d in self._teams[t].datastores if d != name]}
                )
                for t in holders
            }
            self._commit(datastores={name: None}, teams=teams)
            self._registry.remove(name)  # waits for a reload in progress
        log.info("admin: datastore %r removed (grants revoked: %s)", name, holders)
        return holders

    # -- teams -------------------------------------------------------------------------------

    def add_team(self, body: AdminTeamAdd) -> IssuedKey:
        """Creates the team with one new key (returned once)."""
        key, digest = new_key()
        with self._lock:
            if body.name in self._teams:
                raise _conflict(f"team {body.name!r} exists")
            self._known_datastores(body.datastores)
            team = TeamConfig(
                key_sha256=[digest],
                datastores=list(dict.fromkeys(body.datastores)),
                rate_per_minute=body.rate_per_minute,
                burst=body.burst,
            )
            self._commit(teams={body.name: team})
        log.info("admin: team %r added with key %s", body.name, key_id(digest))
        return IssuedKey(team=body.name, key=key, key_id=key_id(digest))

    def remove_team(self, name: str) -> None:
        with self._lock:
            self._team(name)
            self._commit(teams={name: None})
        log.info("admin: team %r removed", name)

    def team(self, name: str) -> AdminTeam:
        with self._lock:
            self._team(name)
            return self._team_view(name)

    def grant(self, team: str, datastore: str, granted: bool) -> AdminTeam:
        """Grants (or revokes) a datastore; idempotent."""
        with self._lock:
            config = self._team(team)
            if granted:
                self._known_datastores([datastore])
            names = [d for d in config.datastores if d != datastore]
            if granted:
                names.append(datastore)
            elif datastore not in config.datastores:
                raise not_found(f"team {team!r} is not granted datastore {datastore!r}")
            if names != config.datastores:
                self._commit(teams={team: config.model_copy(update={"datastores": names})})
            log.info(
                "admin: team %r %s datastore %r",
                team,
                "granted" if granted else "revoked",
                datastore,
            )
            return self._team_view(team)

    # -- keys --------------------------------------------------------------------------------

    def add_key(self, team: str) -> IssuedKey:
        key, digest = new_key()
        with self._lock:
            config = self._team(team)
            self._commit(teams={team: self._with_keys(config, [*config.key_sha256, digest])})
        log.info("admin: team %r got key %s", team, key_id(digest))
        return IssuedKey(team=team, key=key, key_id=key_id(digest))

    def revoke_key(self, team: str, kid: str) -> AdminTeam:
        """Revokes the team's key named by its key id; a team keeps at least one key (409)."""
        with self._lock:
            config = self._team(team)
            kept = [d for d in config.key_sha256 if key_id(d) != kid.lower()]
            if len(kept) == len(config.key_sha256):
                raise not_found(f"team {team!r} has no key {kid!r}")
            if not kept:
                raise _conflict(
                    f"key {kid!r} is the last key of team {team!r}: add a key first, "
                    "or remove the team"
                )
            self._commit(teams={team: self._with_keys(config, kept)})
            log.info("admin: team %r key %s revoked", team, kid)
            return self._team_view(team)

    def rotate(self, team: str, digest: str) -> IssuedKey:
        """Replaces the team's key ``digest`` (the one presented) with a new one."""
        key, new_digest = new_key()
        with self._lock:
            config = self._teams.get(team)
            if config is None or digest not in config.key_sha256:
                raise ServiceError(401, "invalid API key")  # revoked meanwhile
            keys = [new_digest if d == digest else d for d in config.key_sha256]
            self._commit(teams={team: self._with_keys(config, keys)})
        log.info("team %r rotated key %s to %s", team, key_id(digest), key_id(new_digest))
        return IssuedKey(
            team=team, key=key, key_id=key_id(new_digest), revoked_key_id=key_id(digest)
        )

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _with_keys(config: TeamConfig, keys: list[str]) -> TeamConfig:
        return config.model_copy(update={"key_sha256": keys})

    def _team(self, name: str) -> TeamConfig:
        config = self._teams.get(name)
        if config is None:
            raise not_found(f"team {name!r} not found")
        return config

    def _known_datastores(self, names: list[str]) -> None:
        unknown = sorted(set(names) - set(self._datastores))
        if unknown:
            raise not_found(f"datastore(s) {unknown} not found")

    def _require_loaded(self) -> None:
        if not self._registry.loaded.is_set():
            raise ServiceError(
                503,
                "datastores are still loading; retry",
                retry_after=self._retry_after,
            )

    def _commit(
        self,
        datastores: Mapping[str, DatastoreConfig | None] | None = None,
        teams: Mapping[str, TeamConfig | None] | None = None,
    ) -> None:
        """Persists the changes, then applies them (caller holds the lock). Nothing changes
        when the state file cannot be written (503)."""
        state = self._state.model_copy(
            update={
                "datastores": {**self._state.datastores, **(datastores or {})},
                "teams": {**self._state.teams, **(teams or {})},
            }
        )
        try:
            save_state(self._path, state)
        except OSError as exc:
            log.error("admin state %s could not be written: %s", self._path, exc)
            raise ServiceError(
                503, "the change could not be saved; nothing changed", retry_after=self._retry_after
            ) from None
        self._state = state
        _apply(self._datastores, datastores or {})
        _apply(self._teams, teams or {})
        if teams:
            self._keyring.set_teams(self._teams)
            self._limiter.set_teams(self._teams)


def _apply(table: dict[str, V], changes: Mapping[str, V | None]) -> None:
    for name, value in changes.items():
        if value is None:
            table.pop(name, None)
        else:
            table[name] = value
