"""The one thread that owns the models: a bounded queue drained in micro-batches.

Requests (from ``POST .../select`` and from jobs) are put on a bounded queue as ``WorkItem``s
carrying a ``concurrent.futures.Future``. The worker takes the first pending item, then keeps
taking items for up to ``batch_window_ms`` (or until ``max_batch_requests``), sets aside those
for other datastores for the next round, and answers the batch with ONE
``QueryEngine.select_many`` call: one adapter swap per checkpoint and one pass over the features
for all of them, while each request's own numbers stay what they would be alone. Before that
call each request's targets are tokenized, once, on their own, with the token limit checked on
that same pass, so one bad request fails alone. Routes await the futures through
``asyncio.wrap_future``, which resolves them on the event loop.
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

from indexer.query import DEFAULT_SUBTASK, QueryEngine, Selection, TargetQuery
from indexer.search import SearchParams
from less_core.config import Aggregate
from less_core.data import Example
from less_core.errors import LessError
from service.errors import ServiceError
from service.metrics import Metrics
from service.registry import Registry
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

_POLL_S = 0.1  # how often an idle worker looks at its stop flag


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
        on_gradients: Called (in the worker) once the target gradients are computed.
        future: Resolved with the ``Selection`` or the error for this request.
        enqueued: ``time.perf_counter()`` when queued.
        queue_ms: Time spent waiting, set when its batch starts.
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
    future: Future[Selection] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    queue_ms: float = 0.0
    version: str | None = None
    engine: QueryEngine | None = None

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
    )


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
                except Exception as exc:  # the worker must outlive any one batch
                    log.exception("batch of %d failed", len(batch))
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)

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
                item.future.set_exception(exc)
            return
        valid = []
        for item in live:
            item.queue_ms = (start - item.enqueued) * 1000
            try:
                valid.append((item, target_query(engine, item)))
            except LessError as exc:
                item.future.set_exception(exc)
            except Exception as exc:  # a target the tokenizer chokes on fails its request alone
                log.exception("tokenizing a request's targets failed")
                item.future.set_exception(exc)
        if valid:
            self._select(engine, valid)

    def _select(self, engine: QueryEngine, items: list[tuple[WorkItem, TargetQuery]]) -> None:
        hooks = [item.on_gradients for item, _ in items if item.on_gradients is not None]

        def gradients_done() -> None:
            for hook in hooks:
                try:
                    hook()
                except Exception:  # progress reporting must never fail a selection
                    log.exception("progress hook failed")

        try:
            results = engine.select_many([query for _, query in items], gradients_done)
        except Exception as exc:  # unexpected: retry one by one so one request cannot fail the rest
            if len(items) == 1:
                items[0][0].future.set_exception(exc)
                return
            log.warning(
                "batch of %d failed (%s); answering its requests one by one", len(items), exc
            )
            for pair in items:
                self._select(engine, [pair])
            return
        self.metrics.batch_size.observe(len(items))
        for (item, _), result in zip(items, results):
            item.future.set_result(result)
