"""The one thread that owns the models: a bounded queue drained in micro-batches.

Requests (from ``POST .../select`` and from jobs) are put on a bounded queue as ``WorkItem``s
carrying a ``concurrent.futures.Future``. The worker takes the first pending item, then keeps
taking items for up to ``batch_window_ms`` (or until ``max_batch_requests``), sets aside those
for other datastores for the next round, and answers the batch with ONE
``QueryEngine.select_many`` call: one adapter swap per checkpoint and one pass over the features
for all of them, while each request's own numbers stay what they would be alone. Before that
call each request's targets are tokenized, once, on their own, with the token limit checked on
that same pass. Routes await the futures through ``asyncio.wrap_future``, which resolves them
on the event loop.

Faults fail alone: whatever goes wrong with one request (its tokenization, its target
gradients, its search, its answer; any exception type) fails that request's future only, and
the others of its batch get the answers they would get alone (``QueryEngine.select_each``
keeps the requests apart and computes nothing twice). Bad input is a 4xx; running out of memory
a 503 with Retry-After; anything else a 500 naming the stage, its traceback in the log. The
worker thread outlives every batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from indexer.query import (
    DEFAULT_SUBTASK,
    STAGE_GRADIENTS,
    QueryEngine,
    QueryFailure,
    Selection,
    TargetQuery,
    is_out_of_memory,
)
from indexer.search import SearchParams
from indexer.steered import Eligible, Steering
from less_core.config import Aggregate
from less_core.data import Example
from less_core.errors import LessError
from service.errors import ServiceError, less_error_status
from service.metrics import Metrics
from service.registry import Registry
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

_POLL_S = 0.1  # how often an idle worker looks at its stop flag
STAGE_TOKENIZING = "tokenizing the targets"


@dataclass
class WorkItem:
    """One selection waiting for the worker.

    Attributes:
        datastore: Datastore name.
        examples: Target examples (validated, not yet tokenized).
        checkpoints: Checkpoint names to score with, resolved by the selector.
        weights: Their weights.
        k: Rows to return.
        aggregate: How subtask scores combine.
        max_tokens: Token limit per target.
        search: Exact or approximate search options.
        on_gradients: Called (in the worker) once the request's target gradients are computed
            (not if they failed).
        on_features: Called (in the worker) with those features, per checkpoint of
            ``checkpoints`` (a job keeps them, so a restart does not compute them again).
        features: Target features computed before, per checkpoint of ``checkpoints``; the
            engine uses them instead of computing the gradients (None: computed).
        future: Resolved with the ``Selection`` or the error for this request.
        enqueued: ``time.perf_counter()`` when queued.
        queue_ms: Time spent waiting, set when its batch starts.
        avoid: Examples whose gradient direction to avoid (not yet tokenized).
        steering: Filter, budget, balance, guard, explain.
        eligible: Rows it may take and how many, resolved by the selector (None: all, ``k``).
        version: Datastore version the request was checked against (None: not checked).
        engine: That version's engine, pinned when the request was prepared, so a reload
            between prepare and answer cannot mix versions (None: the registry's, if its
            version is still ``version``).
    """

    datastore: str
    examples: Sequence[Example]
    checkpoints: tuple[str, ...]
    weights: tuple[float, ...]
    k: int
    aggregate: Aggregate
    max_tokens: int
    search: SearchParams = SearchParams()
    on_gradients: Callable[[], None] | None = None
    on_features: Callable[[Sequence[torch.Tensor]], None] | None = None
    features: Sequence[torch.Tensor] | None = None
    future: Future[Selection] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    queue_ms: float = 0.0
    version: str | None = None
    engine: QueryEngine | None = None
    avoid: Sequence[Example] = ()
    steering: Steering = Steering()
    eligible: Eligible | None = None

    def batches_with(self, other: WorkItem) -> bool:
        """Same datastore and the same version's engine: one engine call can answer both."""
        return (self.datastore, self.engine, self.version) == (
            other.datastore,
            other.engine,
            other.version,
        )


def target_query(engine: QueryEngine, item: WorkItem) -> TargetQuery:
    """The engine's query for a work item: its targets tokenized once, length-checked.

    Raises:
        DataError: a target over the token limit or with its response truncated away.
    """
    return TargetQuery(
        targets=engine.tokenize_targets(item.examples, item.max_tokens),
        subtasks=[ex.subtask or DEFAULT_SUBTASK for ex in item.examples],
        checkpoints=item.checkpoints,
        weights=item.weights,
        k=item.k,
        aggregate=item.aggregate,
        search=item.search,
        features=item.features,
        avoid=engine.tokenize_avoid(item.avoid, item.max_tokens),
        steering=item.steering,
        eligible=item.eligible,
        target_ids=[ex.id or None for ex in item.examples],
    )


def request_error(
    stage: str, exc: BaseException, item: WorkItem, retry_after_s: int
) -> BaseException:
    """What one failed request answers: bad input as it is (4xx), out of memory as a 503
    with Retry-After, anything else a 500 naming the stage (the traceback goes to the log)."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, LessError) and less_error_status(exc) < 500:
        return exc
    if is_out_of_memory(exc):
        log.warning(
            "out of memory while %s for a request of %d target(s)", stage, len(item.examples)
        )
        return ServiceError(
            503,
            f"out of memory while {stage} for this request ({len(item.examples)} targets); "
            "retry later, or send fewer or shorter targets",
            retry_after=retry_after_s,
        )
    log.error("a request failed while %s", stage, exc_info=exc)
    if isinstance(exc, LessError):  # IntegrityError: its message says what is broken
        return ServiceError(500, f"{stage} failed: {exc}")
    return ServiceError(500, f"internal error while {stage} ({type(exc).__name__})")


class Worker:
    """Owns the engines' compute; see the module docstring."""

    def __init__(self, settings: ServiceSettings, registry: Registry, metrics: Metrics):
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self._queue: queue.Queue[WorkItem] = queue.Queue(maxsize=settings.queue_max)
        self._backlog: deque[WorkItem] = deque()  # taken while batching, for another datastore
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize() + len(self._backlog)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="less-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops after the current batch; pending requests get 503."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        pending = list(self._backlog)
        self._backlog.clear()
        while True:
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for item in pending:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(
                    ServiceError(
                        503,
                        "service is shutting down",
                        retry_after=self.settings.retry_after_unavailable_s,
                    )
                )

    def submit(
        self, item: WorkItem, block: bool = False, timeout: float | None = None
    ) -> Future[Selection]:
        """Queues an item.

        Raises:
            ServiceError: 503 ``overloaded`` with Retry-After when the queue is full.
        """
        try:
            self._queue.put(item, block=block, timeout=timeout)
        except queue.Full:
            self.metrics.rejected.inc("queue_full")
            raise ServiceError(
                503,
                f"{self.settings.queue_max} requests already queued; retry shortly",
                retry_after=self.settings.retry_after_busy_s,
            ) from None
        return item.future

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._collect()
            if batch:
                try:
                    self._answer(batch)
                except Exception:  # a bug outside every request's own boundary
                    log.exception("batch of %d failed", len(batch))
                    for item in batch:
                        self._fail(item, ServiceError(500, "internal error in the worker"))

    def _fail(self, item: WorkItem, error: BaseException) -> None:
        """Sets one request's error unless it already has its answer (never raises)."""
        try:
            if not item.future.done():
                item.future.set_exception(error)
        except Exception:  # cancelled or answered meanwhile: nothing left to tell
            pass

    def _collect(self) -> list[WorkItem]:
        """The next batch: one datastore version's items, gathered for at most the window."""
        if self._backlog:
            first = self._backlog.popleft()
        else:
            try:
                first = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                return []
        batch = [first]
        limit = self.settings.max_batch_requests
        for item in list(self._backlog):
            if len(batch) < limit and item.batches_with(first):
                self._backlog.remove(item)
                batch.append(item)
        deadline = time.monotonic() + self.settings.batch_window_ms / 1000
        while len(batch) < limit:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            (batch if item.batches_with(first) else self._backlog).append(item)
        return batch

    def _answer(self, batch: list[WorkItem]) -> None:
        start = time.perf_counter()
        # Requests whose caller gave up (timeout) are dropped here, before any compute.
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            first = live[0]
            engine = first.engine
            if engine is None:
                engine = self.registry.engine(first.datastore, first.version)
        except ServiceError as exc:
            for item in live:
                self._fail(item, exc)
            return
        valid = []
        for item in live:
            item.queue_ms = (start - item.enqueued) * 1000
            try:
                valid.append((item, target_query(engine, item)))
            except Exception as exc:  # e.g. a target the tokenizer chokes on: this one alone
                self._fail(item, self._error(STAGE_TOKENIZING, exc, item))
        if valid:
            self._select(engine, valid)

    def _error(self, stage: str, exc: BaseException, item: WorkItem) -> BaseException:
        return request_error(stage, exc, item, self.settings.retry_after_busy_s)

    def _select(self, engine: QueryEngine, items: list[tuple[WorkItem, TargetQuery]]) -> None:
        def gradients_done(features: Sequence[Sequence[torch.Tensor] | None]) -> None:
            for (item, _), feats in zip(items, features):
                if feats is None:
                    continue
                for hook, args in ((item.on_gradients, ()), (item.on_features, (feats,))):
                    if hook is None:
                        continue
                    try:
                        hook(*args)
                    except Exception:  # progress reporting must never fail a selection
                        log.exception("progress hook failed")

        try:
            results = engine.select_each([query for _, query in items], gradients_done)
        except Exception as exc:  # select_each keeps requests apart; this is a bug in it
            if len(items) == 1:
                self._fail(items[0][0], self._error(STAGE_GRADIENTS, exc, items[0][0]))
                return
            log.exception("batch of %d failed; answering its requests one by one", len(items))
            for pair in items:
                self._select(engine, [pair])
            return
        self.metrics.batch_size.observe(len(items))
        for (item, _), result in zip(items, results):
            if isinstance(result, QueryFailure):
                self._fail(item, self._error(result.stage, result.error, item))
                continue
            try:
                item.future.set_result(result)
            except Exception:  # cancelled meanwhile (cannot be once running): nothing to do
                log.exception("setting a request's answer failed")
