"""Background selection jobs: state in SQLite, results as JSONL files, one runner thread.

``<jobs_dir>/jobs.sqlite`` holds every job with its team, datastore, status, progress, attempts
and the request JSON, so a job survives a restart, a SIGKILL included: on start, jobs left
``running`` go back to ``queued`` (or, after ``job_max_attempts`` starts that never finished,
to ``failed`` with that reason, so a job that kills the process cannot loop forever) and the
runner works through the queued ones, oldest first. The runner hands each job to the shared
worker (where it may share a batch with interactive selects) and writes the selection to
``<jobs_dir>/results/<id>.jsonl`` (atomically, via a temp file and rename).

A job's target features are saved to ``<jobs_dir>/state/<id>.pt`` (atomically) as soon as
they are computed, with the datastore version and checkpoints they belong to; a job resumed
after a restart on the same version only searches again, from those exact features, so its
result is the one an uninterrupted run gives. Progress: 0 queued, 0.5 once target gradients
are computed (or taken from the saved ones), 1 when the result is written.

Creating a job is refused with 429 and Retry-After when the team already has
``max_jobs_per_team`` unfinished jobs or their targets would exceed
``max_job_targets_per_team`` (``JobLimits``; counted and inserted in one transaction).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from indexer.selection_io import selected_examples
from less_core.errors import LessError
from less_wire import (
    ErrorBody,
    ErrorCode,
    Job,
    SelectRequest,
    code_for_status,
    selection_lines,
    selection_records,
)
from service.errors import ServiceError, less_error_status
from service.registry import Registry
from service.selector import Prepared, Selector
from service.settings import JOBS_DB, ServiceSettings
from service.worker import WorkItem

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    datastore TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    request TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    n_selected INTEGER,
    error_code TEXT,
    error_message TEXT
)
"""
# Added after the first release: created on an older database by ``_migrate``.
_COLUMNS = {
    "n_targets": "INTEGER NOT NULL DEFAULT 0",
    "attempts": "INTEGER NOT NULL DEFAULT 0",
}
_UNFINISHED = "('queued', 'running')"
_POLL_S = 0.5
FEATURES_SUFFIX = ".pt"


@dataclass(frozen=True)
class JobLimits:
    """Per-team caps checked when a job is created (None: no cap)."""

    max_jobs: int | None = None
    max_targets: int | None = None
    retry_after_s: int = 10

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> JobLimits:
        return cls(
            settings.max_jobs_per_team,
            settings.max_job_targets_per_team,
            settings.retry_after_jobs_s,
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class JobStore:
    """Job rows in SQLite and result files next to it; safe to use from several threads."""

    def __init__(self, jobs_dir: Path):
        self.dir = Path(jobs_dir)
        self.results_dir = self.dir / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.dir / "state"
        self.state_dir.mkdir(exist_ok=True)
        self.db_path = self.dir / JOBS_DB
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            have = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
            for column, kind in _COLUMNS.items():
                if column not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # A connection per operation: cheap for SQLite, and nothing is shared across threads.
        with closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            conn.row_factory = sqlite3.Row
            with conn:  # commits, or rolls back on error
                yield conn

    def create(
        self,
        team: str,
        datastore: str,
        request: SelectRequest,
        limits: JobLimits | None = None,
    ) -> Job:
        """Queues a job for the team.

        Raises:
            ServiceError: 429 with Retry-After when ``limits`` would be exceeded.
        """
        job_id, now = uuid.uuid4().hex, _now()
        # Avoid examples cost gradients like targets: they count against the same limit.
        body, n_targets = request.model_dump_json(), len(request.targets) + len(request.avoid or [])
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # the count and the insert in one transaction
            if limits is not None:
                self._check_limits(db, team, n_targets, limits)
            db.execute(
                "INSERT INTO jobs (id, team, datastore, status, progress, request,"
                " created_at, updated_at, n_targets)"
                " VALUES (?, ?, ?, 'queued', 0, ?, ?, ?, ?)",
                (job_id, team, datastore, body, now, now, n_targets),
            )
        return self.get(job_id, team)

    @staticmethod
    def _check_limits(db: sqlite3.Connection, team: str, n_targets: int, limits: JobLimits) -> None:
        jobs, targets = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(n_targets), 0) FROM jobs"
            f" WHERE team = ? AND status IN {_UNFINISHED}",
            (team,),
        ).fetchone()
        if limits.max_jobs is not None and jobs >= limits.max_jobs:
            raise ServiceError(
                429,
                f"this team already has {jobs} unfinished jobs, the limit; retry when one is done",
                retry_after=limits.retry_after_s,
            )
        if limits.max_targets is not None and targets + n_targets > limits.max_targets:
            raise ServiceError(
                429,
                f"this team's unfinished jobs hold {targets} targets; {n_targets} more would "
                f"exceed the limit of {limits.max_targets}; retry when one is done",
                retry_after=limits.retry_after_s,
            )

    def get(self, job_id: str, team: str) -> Job:
        """The team's job; another team's job is 404 like a missing one."""
        with self._db() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE id = ? AND team = ?", (job_id, team)
            ).fetchone()
        if row is None:
            raise ServiceError(404, f"job {job_id!r} not found")
        return _job(row)

    def update(self, job_id: str, **fields: object) -> None:
        fields["updated_at"] = _now()
        assignments = ", ".join(f"{name} = ?" for name in fields)  # names are ours, never input
        with self._db() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*fields.values(), job_id))

    def start(self, job_id: str) -> int:
        """Marks a job running and counts the start; returns its number of starts so far."""
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET status = 'running', progress = 0, attempts = attempts + 1,"
                " updated_at = ? WHERE id = ?",
                (_now(), job_id),
            )
            row = db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return int(row["attempts"]) if row is not None else 0

    def requeue_interrupted(self, max_attempts: int | None = None) -> tuple[int, int]:
        """Jobs a previous process left ``running``: back to ``queued``, or ``failed`` with the
        reason once they were started ``max_attempts`` times. Returns (re-queued, failed)."""
        now = _now()
        with self._db() as db:
            failed = 0
            if max_attempts is not None:
                failed = db.execute(
                    "UPDATE jobs SET status = 'failed', error_code = ?, error_message = ?,"
                    " updated_at = ? WHERE status = 'running' AND attempts >= ?",
                    (
                        ErrorCode.INTERNAL.value,
                        f"the service stopped {max_attempts} times while running this job; "
                        "it is not retried again",
                        now,
                        max_attempts,
                    ),
                ).rowcount
            requeued = db.execute(
                "UPDATE jobs SET status = 'queued', progress = 0, updated_at = ?"
                " WHERE status = 'running'",
                (now,),
            ).rowcount
        return requeued, failed

    def next_queued(self) -> tuple[str, str, SelectRequest] | None:
        """(id, datastore, request) of the oldest queued job, or None."""
        with self._db() as db:
            row = db.execute(
                "SELECT id, datastore, request FROM jobs WHERE status = 'queued'"
                " ORDER BY created_at, id LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        try:
            request = SelectRequest.model_validate_json(row["request"])
        except ValueError as exc:
            # A stored request that no longer reads back (saved by an older version, or a
            # damaged row) must not stop the queue behind it: it fails alone.
            log.error("job %s: its stored request does not validate: %s", row["id"], exc)
            self.update(
                row["id"],
                status="failed",
                error_code=ErrorCode.INVALID_REQUEST.value,
                error_message="the stored request could not be read back; submit it again",
            )
            return self.next_queued()
        return row["id"], row["datastore"], request

    def result_path(self, job_id: str) -> Path:
        return self.results_dir / f"{job_id}.jsonl"

    def features_path(self, job_id: str) -> Path:
        return self.state_dir / f"{job_id}{FEATURES_SUFFIX}"

    def save_features(
        self,
        job_id: str,
        version: str,
        checkpoints: Sequence[str],
        features: Sequence[torch.Tensor],
    ) -> None:
        """Keeps a job's target features (per checkpoint) for a restart, atomically."""
        final = self.features_path(job_id)
        tmp = final.with_suffix(".tmp")
        state = {
            "version": version,
            "checkpoints": list(checkpoints),
            "features": [f.detach().to("cpu", torch.float32).contiguous() for f in features],
        }
        with tmp.open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(final)

    def load_features(
        self, job_id: str, version: str, checkpoints: Sequence[str], n_targets: int
    ) -> list[torch.Tensor] | None:
        """The job's saved features if they belong to this version, checkpoints and number of
        targets; None otherwise (none saved, another version, or an unreadable file)."""
        path = self.features_path(job_id)
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            features = list(state["features"])
            fits = (
                state["version"] == version
                and list(state["checkpoints"]) == list(checkpoints)
                and len(features) == len(checkpoints)
                and all(
                    f.ndim == 2 and f.shape[0] == n_targets and bool(torch.isfinite(f).all())
                    for f in features
                )
            )
        except Exception as exc:  # a damaged file costs a recomputation, never the job
            log.warning("job %s: saved target features unreadable (%s); recomputing", job_id, exc)
            return None
        return features if fits else None

    def drop_features(self, job_id: str) -> None:
        self.features_path(job_id).unlink(missing_ok=True)

    def write_result(self, job_id: str, lines: Iterator[str]) -> None:
        final = self.result_path(job_id)
        tmp = final.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(final)


def _job(row: sqlite3.Row) -> Job:
    error = None
    if row["error_code"]:
        error = ErrorBody(code=row["error_code"], message=row["error_message"] or "")
    return Job(
        id=row["id"],
        datastore=row["datastore"],
        status=row["status"],
        progress=row["progress"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        n_selected=row["n_selected"],
        error=error,
    )


class JobRunner:
    """The thread that takes queued jobs one at a time and runs them through the worker."""

    def __init__(self, store: JobStore, selector: Selector, registry: Registry):
        self.store = store
        self.selector = selector
        self.registry = registry
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        requeued, failed = self.store.requeue_interrupted(self.selector.settings.job_max_attempts)
        if requeued:
            log.info("re-queued %d job(s) interrupted by a previous shutdown", requeued)
        if failed:
            log.warning("%d job(s) interrupted too often marked failed", failed)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="less-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def notify(self) -> None:
        """Wakes the runner after a job was created."""
        self._wake.set()

    def _run(self) -> None:
        # Jobs wait until every engine had its chance to load, so a restart does not fail them.
        while not self._stop.is_set() and not self.registry.loaded.wait(_POLL_S):
            pass
        while not self._stop.is_set():
            try:
                nxt = self.store.next_queued()
            except Exception:  # e.g. a locked or damaged database: try again, do not die
                log.exception("reading the next queued job failed")
                self._stop.wait(_POLL_S)
                continue
            if nxt is None:
                self._wake.wait(_POLL_S)
                self._wake.clear()
                continue
            self._run_job(*nxt)

    def _work_item(self, job_id: str, prepared: Prepared) -> WorkItem:
        """The job's request for the worker, with its saved target features if it has any
        for this version (then only the search runs again), else saving them once computed."""
        saved = self.store.load_features(
            job_id, prepared.version, prepared.checkpoints, prepared.n_featurized
        )
        item = self.selector.work_item(prepared, features=saved)
        if saved is not None:
            log.info("job %s resumed from its saved target features", job_id)
            self.store.update(job_id, progress=0.5)
        else:
            item.on_gradients = lambda: self.store.update(job_id, progress=0.5)
            item.on_features = lambda feats: self.store.save_features(
                job_id, prepared.version, prepared.checkpoints, feats
            )
        return item

    def _run_job(self, job_id: str, datastore: str, request: SelectRequest) -> None:
        attempt = self.store.start(job_id)
        try:
            prepared = self.selector.prepare(datastore, request)
            item = self._work_item(job_id, prepared)
            future = self.selector.worker.submit(
                item, block=True, timeout=self.selector.settings.job_submit_timeout_s
            )
            while True:
                try:
                    selection = future.result(timeout=_POLL_S)
                    break
                except FutureTimeout:
                    if self._stop.is_set():  # a clean shutdown does not count as a start
                        self.store.update(job_id, status="queued", attempts=attempt - 1)
                        return
            selected = selected_examples(selection, request.return_scores)
            self.store.write_result(job_id, selection_lines(selection_records(selected)))
        except ServiceError as exc:
            self._fail(job_id, exc.code, exc.message)
        except LessError as exc:
            status = less_error_status(exc)
            self._fail(
                job_id, code_for_status(status), str(exc) if status < 500 else "internal error"
            )
        except Exception:  # a job must end failed, never stay running forever
            log.exception("job %s failed", job_id)
            self._fail(job_id, ErrorCode.INTERNAL, "internal error")
        else:
            self.store.update(job_id, status="succeeded", progress=1.0, n_selected=len(selected))
            self.store.drop_features(job_id)
            log.info("job %s on %s done: %d selected", job_id, datastore, len(selected))

    def _fail(self, job_id: str, code: ErrorCode, message: str) -> None:
        try:
            self.store.update(job_id, status="failed", error_code=code.value, error_message=message)
            self.store.drop_features(job_id)
        except Exception:  # the next start finds it 'running' and decides again
            log.exception("recording job %s as failed failed", job_id)
        log.info("job %s failed: %s %s", job_id, code, message)
