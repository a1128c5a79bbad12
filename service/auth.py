"""API keys to teams, the admin keys, and each team's token-bucket rate limits.

Keys are never stored: a key is known by its sha256 hex digest. A presented key is hashed and
compared with every known digest in constant time and without stopping at a match, so neither
the answer's timing nor its content tells which digest (or how much of one) matched. Team keys
and admin keys are separate rings: a team key is no admin key and an admin key no team key.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from service.errors import ServiceError, unauthorized
from service.settings import ServiceSettings, TeamConfig, hash_key


@dataclass(frozen=True)
class Team:
    """The caller, as resolved from its API key."""

    name: str
    datastores: frozenset[str]


def bearer_digest(authorization: str | None) -> str:
    """The sha256 hex digest of the key in an ``Authorization: Bearer <key>`` header.

    Raises:
        ServiceError: 401 when the header is missing or not a bearer key.
    """
    if not authorization:
        raise unauthorized("missing Authorization: Bearer <key> header")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise unauthorized("Authorization header must be 'Bearer <key>'")
    return hash_key(key.strip())


def match_digest(digest: str, known: Iterable[str]) -> str | None:
    """The entry of ``known`` equal to ``digest``, or None.

    Every entry is compared with ``hmac.compare_digest``, none skipped after a match, so the time
    taken depends on the number of entries only, not on which one (if any) matched.
    """
    presented = digest.encode()
    found: str | None = None
    for candidate in known:
        if hmac.compare_digest(candidate.encode(), presented):
            found = candidate
    return found


class KeyRing:
    """Resolves ``Authorization: Bearer <key>`` headers to teams by the key's sha256.

    The table can be replaced at run time (``set_teams``, by the admin API); a lookup sees the
    old or the new table, never a mix.
    """

    def __init__(self, teams: Mapping[str, TeamConfig]):
        self.set_teams(teams)

    def set_teams(self, teams: Mapping[str, TeamConfig]) -> None:
        table = {
            digest: Team(name, frozenset(config.datastores))
            for name, config in teams.items()
            for digest in config.key_sha256
        }
        self._by_digest = table  # replaced in one assignment: readers take one of the two

    def identify(self, authorization: str | None) -> tuple[Team, str]:
        """The team owning the bearer key and the key's digest.

        Raises:
            ServiceError: 401 when the header is missing, malformed or the key unknown.
        """
        digest = bearer_digest(authorization)
        table = self._by_digest
        found = match_digest(digest, tuple(table))
        if found is None:
            raise unauthorized("invalid API key")
        return table[found], found

    def team_for(self, authorization: str | None) -> Team:
        """The team owning the bearer key (401 otherwise, see ``identify``)."""
        return self.identify(authorization)[0]


class AdminKeys:
    """The admin keys' digests (from the settings; not changeable through the API)."""

    def __init__(self, digests: Iterable[str]):
        self._digests = tuple(digests)

    def is_admin(self, authorization: str | None) -> bool:
        """Whether the header carries an admin key (no exception for a missing or bad one)."""
        try:
            digest = bearer_digest(authorization)
        except ServiceError:
            return False
        return match_digest(digest, self._digests) is not None

    def check(self, authorization: str | None) -> None:
        """Raises ServiceError 401 unless the header carries an admin key."""
        digest = bearer_digest(authorization)
        if match_digest(digest, self._digests) is None:
            raise unauthorized("an admin key is required")


class TokenBucket:
    """Capacity ``burst`` tokens, refilled at ``rate_per_minute``; one token per request."""

    def __init__(
        self, rate_per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ):
        self.rate = rate_per_minute / 60.0
        self.capacity = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Takes a token; returns 0 on success, else the seconds until one is available."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


class RateLimiter:
    """Two token buckets per team: one for its requests, a more generous one for job polling
    (so that waiting for a job does not eat the tokens its next selections need)."""

    def __init__(self, settings: ServiceSettings):
        self._settings = settings
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[tuple[float, int], TokenBucket, TokenBucket]] = {}
        self.set_teams(settings.teams)

    def set_teams(self, teams: Mapping[str, TeamConfig]) -> None:
        """Buckets for these teams; a team whose limits did not change keeps its buckets."""
        with self._lock:
            buckets = {}
            for name, config in teams.items():
                limits = (config.rate_per_minute, config.burst)
                old = self._buckets.get(name)
                if old is not None and old[0] == limits:
                    buckets[name] = old
                else:
                    buckets[name] = (
                        limits,
                        TokenBucket(config.rate_per_minute, config.burst),
                        TokenBucket(self._settings.poll_rate_per_minute, self._settings.poll_burst),
                    )
            self._buckets = buckets

    def check(self, team: Team, *, polling: bool = False) -> None:
        """Spends one of the team's tokens (of its polling bucket when ``polling``).

        Raises:
            ServiceError: 429 ``rate_limited`` with ``Retry-After`` in whole seconds (>= 1);
                401 if the team was removed since its key was checked.
        """
        entry = self._buckets.get(team.name)
        if entry is None:
            raise unauthorized("invalid API key")
        wait = (entry[2] if polling else entry[1]).take()
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            what = "job polling rate limit" if polling else "rate limit"
            raise ServiceError(
                429,
                f"{what} of team {team.name!r} exceeded; retry in {retry_after} s",
                retry_after=retry_after,
            )
