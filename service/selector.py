"""From a ``SelectRequest`` to a ``SelectResponse``: limits, cache, worker, timeout, usage log.

The request was validated when it was parsed. Checks that need no tokenizer (target count, k
against N, checkpoint names) run here in the request path and resolve k and the checkpoint
weights once; the worker, which owns the tokenizer, tokenizes each target once (checking its
length on that pass) and hands the engine a ready ``TargetQuery``.

A response's timings are wall times of what the request waited for: ``queue_ms`` until its
micro-batch started, ``gradient_ms`` from then until the batch's target gradients were done
(every request's targets in the batch are tokenized and featurized before any search) and
``search_ms`` from then until its answer was set. A batched request waits for the whole batch's
gradients, so its ``gradient_ms`` is the batch's, not a share of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from indexer.query import QueryEngine, Selection
from indexer.requests import examples_from_targets, search_params, selection_config, steering_of
from indexer.selection_io import selected_examples
from indexer.steered import Eligible, Steering, resolve_selection
from less_core.data import Example
from less_wire import SelectRequest, SelectResponse, Timings
from service.auth import Team
from service.cache import SelectionCache, cache_key
from service.errors import ServiceError, invalid
from service.metrics import Metrics
from service.registry import Registry
from service.settings import ServiceSettings
from service.worker import Worker, WorkItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A checked request with its size and checkpoint weights resolved, ready for the worker."""

    datastore: str
    version: str
    request: SelectRequest
    examples: list[Example]
    checkpoints: tuple[str, ...]
    weights: tuple[float, ...]
    k: int
    engine: QueryEngine | None = None  # the version's engine, taken with the store (None: loading)
    avoid: list[Example] = field(default_factory=list)
    steering: Steering = Steering()
    eligible: Eligible | None = None

    @property
    def n_featurized(self) -> int:
        """Examples whose gradients the request needs: targets, then avoid examples."""
        return len(self.examples) + len(self.avoid)


class PhaseClock:
    """When a work item's batch finished its gradients and when its answer was set.

    ``gradients_done`` is the item's ``on_gradients`` hook (the worker calls it once the batch's
    target gradients are computed, before the search; again if the batch is retried request
    by request, so the last call counts); ``answered`` is a done-callback of its future.
    """

    def __init__(self) -> None:
        self.gradients_at: float | None = None
        self.answered_at: float | None = None

    def gradients_done(self) -> None:
        self.gradients_at = time.perf_counter()

    def answered(self, _future: object) -> None:
        self.answered_at = time.perf_counter()

    def timings(self, item: WorkItem, selection: Selection, total_ms: float) -> Timings:
        """Wall times of the item's queue wait, its batch's gradient phase and its search.

        Falls back to the engine's own figures where a moment was not seen.
        """
        batch_start = item.enqueued + item.queue_ms / 1000
        gradient_ms, search_ms = selection.gradient_ms, selection.search_ms
        if self.gradients_at is not None:
            gradient_ms = max(0.0, (self.gradients_at - batch_start) * 1000)
            if self.answered_at is not None:
                search_ms = max(0.0, (self.answered_at - self.gradients_at) * 1000)
        return Timings(
            gradient_ms=gradient_ms,
            search_ms=search_ms,
            queue_ms=item.queue_ms,
            total_ms=total_ms,
        )


class Selector:
    """Validates, caches and runs selections through the worker."""

    def __init__(
        self,
        settings: ServiceSettings,
        registry: Registry,
        worker: Worker,
        cache: SelectionCache,
        metrics: Metrics,
    ):
        self.settings = settings
        self.registry = registry
        self.worker = worker
        self.cache = cache
        self.metrics = metrics
        self._pending: dict[str, int] = {}  # team -> selects queued or running
        self._pending_lock = threading.Lock()

    @contextmanager
    def _team_slot(self, team: Team) -> Iterator[None]:
        """Holds one of the team's ``max_pending_selects_per_team`` slots for a select.

        Raises:
            ServiceError: 429 with Retry-After when the team has that many in flight already.
        """
        limit = self.settings.max_pending_selects_per_team
        with self._pending_lock:
            held = self._pending.get(team.name, 0)
            if limit is not None and held >= limit:
                self.metrics.rejected.inc("team_pending")
                raise ServiceError(
                    429,
                    f"team {team.name!r} already has {held} selects in flight (limit {limit})",
                    retry_after=self.settings.retry_after_busy_s,
                )
            self._pending[team.name] = held + 1
        try:
            yield
        finally:
            with self._pending_lock:
                self._pending[team.name] -= 1

    def prepare(self, name: str, request: SelectRequest) -> Prepared:
        """Checks the request against the limits and the datastore.

        Raises:
            ServiceError: 400 for too many targets (avoid examples count too), a k over
                ``max_k``.
            LessError: ConfigError (k > the eligible rows, a fraction selecting none),
                DataError (a bad filter, a filter no row passes, a budget below every row),
                CheckpointNotFoundError (unknown checkpoint): 400.
        """
        # Store and engine taken together: the request is checked and answered by one version.
        store, engine = self.registry.snapshot(name)
        n_targets, n_avoid = len(request.targets), len(request.avoid or [])
        if n_targets + n_avoid > self.settings.max_targets:
            given = f"{n_targets} targets" + (f" and {n_avoid} avoid examples" if n_avoid else "")
            raise invalid(f"{given} given; at most {self.settings.max_targets} allowed")
        config = selection_config(request)
        steering = steering_of(request)
        resolved = resolve_selection(store, config, steering)
        eligible, k = resolved.eligible, resolved.eligible.k
        if self.settings.max_k is not None and k > self.settings.max_k:
            if request.k is None and request.fraction is None:
                # A token budget alone: k is only its upper bound, the walk usually stops far
                # earlier; the service's limit caps the rows instead of refusing.
                k = self.settings.max_k
                eligible = replace(eligible, k=k)
            else:
                raise invalid(
                    f"k={k} exceeds this service's limit of {self.settings.max_k}; use a job"
                )
        return Prepared(
            name,
            store.version,
            request,
            examples_from_targets(request.targets),
            resolved.checkpoints,
            resolved.weights,
            k,
            engine,
            avoid=examples_from_targets(request.avoid or []),
            steering=steering,
            eligible=eligible,
        )

    def work_item(self, prepared: Prepared, **extra: Any) -> WorkItem:
        """The worker's item for a prepared request (``extra``: WorkItem hooks and fields)."""
        return WorkItem(
            datastore=prepared.datastore,
            version=prepared.version,
            engine=prepared.engine,
            examples=prepared.examples,
            checkpoints=prepared.checkpoints,
            weights=prepared.weights,
            k=prepared.k,
            aggregate=prepared.request.aggregate,
            max_tokens=self.registry.max_target_tokens(prepared.datastore),
            search=search_params(prepared.request),
            avoid=prepared.avoid,
            steering=prepared.steering,
            eligible=prepared.eligible,
            **extra,
        )

    def submit(
        self,
        prepared: Prepared,
        on_gradients: Callable[[], None] | None = None,
        block: bool = False,
        timeout: float | None = None,
        clock: PhaseClock | None = None,
    ) -> tuple[WorkItem, Future[Selection]]:
        """Queues the request; ``clock`` (if given) sees its gradient and answer moments."""
        hook = on_gradients
        if clock is not None:

            def hook() -> None:
                clock.gradients_done()
                if on_gradients is not None:
                    on_gradients()

        item = self.work_item(prepared, on_gradients=hook)
        if clock is not None:  # before it is queued: the worker may answer it at once
            item.future.add_done_callback(clock.answered)
        return item, self.worker.submit(item, block=block, timeout=timeout)

    async def select(self, name: str, request: SelectRequest, team: Team) -> SelectResponse:
        """Answers a select from the cache or through the worker, within the request timeout."""
        start = time.perf_counter()
        # Off the event loop: a filter over a large pool takes a while.
        prepared = await asyncio.to_thread(self.prepare, name, request)
        if request.explain and prepared.k > self.settings.max_explained_rows:
            raise invalid(
                f"explain is answered for at most {self.settings.max_explained_rows} rows in a "
                f"select; this one may return {prepared.k}: use a job (POST .../jobs)"
            )
        key = cache_key(name, prepared.version, request)
        hit = self.cache.get(key)
        if hit is not None:
            self.metrics.cache_hits.inc()
            total = (time.perf_counter() - start) * 1000
            response = hit.model_copy(
                update={
                    "cached": True,
                    "timings": Timings(gradient_ms=0, search_ms=0, queue_ms=0, total_ms=total),
                }
            )
        else:
            clock = PhaseClock()
            with self._team_slot(team):
                item, future = self.submit(prepared, clock=clock)
                try:
                    selection = await asyncio.wait_for(
                        asyncio.wrap_future(future), self.settings.request_timeout_s
                    )
                except asyncio.TimeoutError:
                    future.cancel()  # still queued: the worker skips it
                    self.metrics.rejected.inc("timeout")
                    raise ServiceError(
                        504,
                        f"selection took longer than {self.settings.request_timeout_s} s",
                    ) from None
            # Many rows make many models: built off the event loop.
            selected = await asyncio.to_thread(selected_examples, selection, request.return_scores)
            total = (time.perf_counter() - start) * 1000
            response = SelectResponse(
                datastore=name,
                datastore_version=prepared.version,
                selected=selected,
                n_candidates=selection.n_candidates,
                n_tokens=selection.n_tokens,
                timings=clock.timings(item, selection, total),
            )
            if len(selected) <= self.settings.cache_max_rows:
                self.cache.put(key, response)
        self._log_usage(team, prepared, response)
        return response

    def _log_usage(self, team: Team, prepared: Prepared, response: SelectResponse) -> None:
        extra = ""
        if self.settings.log_target_contents:
            extra = " targets=" + json.dumps(
                [t.model_dump(exclude_none=True) for t in prepared.request.targets]
            )
        log.info(
            "usage team=%s datastore=%s n_targets=%d k=%d latency_ms=%.1f cached=%s%s",
            team.name,
            prepared.datastore,
            len(prepared.examples),
            prepared.k,
            response.timings.total_ms,
            response.cached,
            extra,
        )
