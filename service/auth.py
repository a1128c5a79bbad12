"""API keys to teams, and each team's token-bucket rate limit."""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.errors import ServiceError, unauthorized
from service.settings import ServiceSettings, TeamConfig, hash_key


@dataclass(frozen=True)
class Team:
    """The caller, as resolved from its API key."""

    name: str
    datastores: frozenset[str]


class KeyRing:
    """Resolves ``Authorization: Bearer <key>`` headers to teams by the key's sha256."""

    def __init__(self, teams: dict[str, TeamConfig]):
        self._by_digest = {
            digest: Team(name, frozenset(config.datastores))
            for name, config in teams.items()
            for digest in config.key_sha256
        }

    def team_for(self, authorization: str | None) -> Team:
        """The team owning the bearer key.

        Raises:
            ServiceError: 401 when the header is missing, malformed or the key unknown.
        """
        if not authorization:
            raise unauthorized("missing Authorization: Bearer <key> header")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise unauthorized("Authorization header must be 'Bearer <key>'")
        digest = hash_key(key.strip())
        for known, team in self._by_digest.items():
            # Constant-time compare so response timing does not leak digest prefixes.
            if hmac.compare_digest(known, digest):
                return team
        raise unauthorized("invalid API key")


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
    """One token bucket per team."""

    def __init__(self, settings: ServiceSettings):
        self._buckets = {
            name: TokenBucket(config.rate_per_minute, config.burst)
            for name, config in settings.teams.items()
        }

    def check(self, team: Team) -> None:
        """Spends one of the team's tokens.

        Raises:
            ServiceError: 429 ``rate_limited`` with ``Retry-After`` in whole seconds (>= 1).
        """
        wait = self._buckets[team.name].take()
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise ServiceError(
                429,
                f"rate limit of team {team.name!r} exceeded; retry in {retry_after} s",
                retry_after=retry_after,
            )
