"""Background selection jobs: state in SQLite, results as JSONL files, one runner thread.

``<jobs_dir>/jobs.sqlite`` holds every job with its team, datastore, status, progress and the
request JSON, so a job survives a restart: on start, jobs left ``running`` go back to
``queued`` and the runner works through the queued ones, oldest first. The runner hands each
job to the shared worker (where it may share a batch with interactive selects) and writes the
selection to ``<jobs_dir>/results/<id>.jsonl`` (atomically, via a temp file and rename).
Progress: 0 queued, 0.5 once target gradients are computed, 1 when the result is written.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from indexer.selection_io import selected_examples
from less_core.errors import LessError
from less_wire import (
    ErrorBody,
    ErrorCode,
    Job,
    SelectRequest,
    code_for_status,
    selection_records,
)
from service.errors import ServiceError, less_error_status
from service.registry import Registry
from service.selector import Selector
from service.settings import JOBS_DB

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
_POLL_S = 0.5


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class JobStore:
    """Job rows in SQLite and result files next to it; safe to use from several threads."""

    def __init__(self, jobs_dir: Path):
        self.dir = Path(jobs_dir)
        self.results_dir = self.dir / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.dir / JOBS_DB
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # A connection per operation: cheap for SQLite, and nothing is shared across threads.
        with closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            conn.row_factory = sqlite3.Row
            with conn:  # commits, or rolls back on error
                yield conn

    def create(self, team: str, datastore: str, request: SelectRequest) -> Job:
        job_id, now = uuid.uuid4().hex, _now()
        with self._db() as db:
            db.execute(
                "INSERT INTO jobs (id, team, datastore, status, progress, request,"
                " created_at, updated_at)"
                " VALUES (?, ?, ?, 'queued', 0, ?, ?, ?)",
                (job_id, team, datastore, request.model_dump_json(), now, now),
            )
        return self.get(job_id, team)

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

    def requeue_interrupted(self) -> int:
        """Puts jobs a previous process left ``running`` back to ``queued``; returns how many."""
        with self._db() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = 'queued', progress = 0, updated_at = ?"
                " WHERE status = 'running'",
                (_now(),),
            )
            return cursor.rowcount

    def next_queued(self) -> tuple[str, str, SelectRequest] | None:
        """(id, datastore, request) of the oldest queued job, or None."""
        with self._db() as db:
            row = db.execute(
                "SELECT id, datastore, request FROM jobs WHERE status = 'queued'"
                " ORDER BY created_at, id LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return row["id"], row["datastore"], SelectRequest.model_validate_json(row["request"])

    def result_path(self, job_id: str) -> Path:
        return self.results_dir / f"{job_id}.jsonl"

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
        n = self.store.requeue_interrupted()
        if n:
            log.info("re-queued %d job(s) interrupted by a previous shutdown", n)
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
            nxt = self.store.next_queued()
            if nxt is None:
                self._wake.wait(_POLL_S)
                self._wake.clear()
                continue
            self._run_job(*nxt)

    def _run_job(self, job_id: str, datastore: str, request: SelectRequest) -> None:
        self.store.update(job_id, status="running", progress=0.0)
        try:
            prepared = self.selector.prepare(datastore, request)
            _, future = self.selector.submit(
                prepared,
                on_gradients=lambda: self.store.update(job_id, progress=0.5),
                block=True,
                timeout=self.selector.settings.job_submit_timeout_s,
            )
            while True:
                try:
                    selection = future.result(timeout=_POLL_S)
                    break
                except FutureTimeout:
                    if self._stop.is_set():
                        return  # stays 'running'; the next start re-queues it
            selected = selected_examples(selection, request.return_scores)
            self.store.write_result(
                job_id, (r.model_dump_json() for r in selection_records(selected))
            )
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
            log.info("job %s on %s done: %d selected", job_id, datastore, len(selected))

    def _fail(self, job_id: str, code: ErrorCode, message: str) -> None:
        self.store.update(job_id, status="failed", error_code=code.value, error_message=message)
        log.info("job %s failed: %s %s", job_id, code, message)
