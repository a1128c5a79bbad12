"""Units of work cached on disk, keyed by their inputs, and a progress log with an ETA.

Each unit (a selection, a training, ...) writes one JSON file, atomically (temp file + rename),
named by a hash of everything that decides its result. A unit whose file is there is never run
again; a kill leaves at most a temp file of the unit in progress, which is ignored and redone.
Artifacts that are directories (warmups, datastores, frozen-prefix stores) resume by their own
means and record their completion as a unit too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from indexer.fsutil import atomic_write_json

log = logging.getLogger(__name__)

KEY_CHARS = 16


def unit_key(payload: Any) -> str:
    """A short stable hash of a JSON-able payload (dict keys sorted)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_CHARS]


class UnitCache:
    """``root/<kind>/<name>-<key>.json`` per finished unit."""

    def __init__(self, root: Path, progress: Progress | None = None):
        self.root = Path(root)
        self.progress = progress
        self._counted: set[Path] = set()  # a unit asked for twice in one run counts once

    def path(self, kind: str, name: str, payload: Any) -> Path:
        """Where the unit's result lives (whether or not it exists yet)."""
        return self.root / kind / f"{name}-{unit_key(payload)}.json"

    def load(self, path: Path) -> dict[str, Any] | None:
        """The stored result, or None when absent or unreadable (then it is redone)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("%s is unreadable; redoing that unit", path)
            return None
        if not isinstance(data, dict) or "result" not in data:
            log.warning("%s is not a finished unit; redoing it", path)
            return None
        return data

    def run(
        self, kind: str, name: str, payload: Any, compute: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """The unit's result: read from its file, or computed, timed and stored.

        Args:
            kind: the unit's kind (a sub-directory; the ETA groups by it).
            name: a readable prefix of the file name.
            payload: everything that decides the result (hashed into the file name and stored).
            compute: makes the result (a JSON-able dict) when it is not stored yet.
        """
        path = self.path(kind, name, payload)
        stored = self.load(path)
        if stored is not None:
            if self.progress is not None and path not in self._counted:
                self.progress.skipped(kind)
            self._counted.add(path)
            return stored["result"]
        t0 = time.monotonic()
        result = compute()
        seconds = time.monotonic() - t0
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"kind": kind, "name": name, "inputs": payload, "seconds": seconds}
        atomic_write_json(path, {**record, "result": result})
        if self.progress is not None:
            self.progress.done(kind, seconds, name)
        self._counted.add(path)
        return result

    def seconds_by_kind(self) -> dict[str, dict[str, float]]:
        """Units stored and their summed compute seconds, per kind (across all resumes)."""
        out: dict[str, dict[str, float]] = {}
        for path in sorted(self.root.glob("*/*.json")):
            data = self.load(path)
            if data is None:
                continue
            entry = out.setdefault(data["kind"], {"units": 0, "seconds": 0.0})
            entry["units"] += 1
            entry["seconds"] += float(data.get("seconds", 0.0))
        return out


class Progress:
    """Counts units per kind against the plan and logs done/total with an ETA.

    The ETA is the remaining units of each kind times the mean seconds of that kind's units
    timed in this process (``expected_s`` of the kind until one is), summed over kinds.
    """

    def __init__(
        self,
        planned: dict[str, int],
        expected_s: dict[str, float] | None = None,
        logger: logging.Logger | None = None,
    ):
        self.planned = dict(planned)
        self.expected_s = dict(expected_s or {})
        self.finished = dict.fromkeys(planned, 0)
        self.timed: dict[str, list[float]] = {}
        self.t0 = time.monotonic()
        self.log = logger or log

    def _count(self, kind: str) -> None:
        self.finished[kind] = self.finished.get(kind, 0) + 1
        # Identical selections share a training, so a kind may finish under its plan; a kind
        # the plan did not foresee grows its total instead of showing more than 100 %.
        self.planned[kind] = max(self.planned.get(kind, 0), self.finished[kind])

    def skipped(self, kind: str) -> None:
        """A unit found in the cache."""
        self._count(kind)

    def done(self, kind: str, seconds: float, name: str) -> None:
        """A unit computed now, in ``seconds``."""
        self._count(kind)
        self.timed.setdefault(kind, []).append(seconds)
        self.log.info(
            "%s %s done in %.1f s | %s | elapsed %.0f s, ETA %s",
            kind,
            name,
            seconds,
            self.counts(),
            time.monotonic() - self.t0,
            _duration(self.eta_s()),
        )

    def counts(self) -> str:
        return ", ".join(f"{k} {self.finished[k]}/{self.planned[k]}" for k in self.planned)

    def eta_s(self) -> float:
        total = 0.0
        for kind, planned in self.planned.items():
            left = max(0, planned - self.finished.get(kind, 0))
            times = self.timed.get(kind)
            mean = sum(times) / len(times) if times else self.expected_s.get(kind, 0.0)
            total += left * mean
        return total


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    return f"{minutes} min {s:02d} s" if minutes else f"{s} s"
