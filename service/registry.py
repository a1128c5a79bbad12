"""The datastores the service knows: manifests read at start, engines loaded in the background.

``/healthz`` answers while engines load; ``/readyz`` reports ready once every datastore's engine
is loaded. A datastore that fails to load stays "failed" (logged, shown by /readyz) and its
requests answer 503 instead of taking the process down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch
from less_wire import CheckpointInfo, DatastoreSummary, ProjectorInfo

from indexer.datastore import Datastore
from indexer.query import QueryEngine
from less_core.errors import LessError
from service.errors import ServiceError
from service.settings import DatastoreConfig, ServiceSettings

log = logging.getLogger(__name__)

EngineFactory = Callable[[Datastore, DatastoreConfig, str], QueryEngine]


def default_engine_factory(store: Datastore, config: DatastoreConfig, device: str) -> QueryEngine:
    return QueryEngine(store, config.model_dir, device)


def summarize(name: str, store: Datastore) -> DatastoreSummary:
    """The API's view of a datastore version, from its manifest."""
    m = store.manifest
    return DatastoreSummary(
        name=name,
        version=store.version,
        model_id=m.model.id,
        n_examples=store.n,
        checkpoints=[CheckpointInfo(name=c.name, lr=c.lr, weight=c.weight) for c in m.checkpoints],
        projector=ProjectorInfo(
            kind=m.projector.kind,
            dim=m.projector.dim,
            seed=m.projector.seed,
            scope=m.projector.scope,
        ),
        feature_dtype=m.features.dtype,
        created_at=m.created_at,
    )


class Registry:
    """Datastores by name, their summaries, and their engines once loaded."""

    def __init__(
        self, settings: ServiceSettings, engine_factory: EngineFactory = default_engine_factory
    ):
        self.settings = settings
        self._factory = engine_factory
        self._stores: dict[str, Datastore] = {}
        self._engines: dict[str, QueryEngine] = {}
        self._state: dict[str, str] = {}
        self._lock = threading.Lock()
        self.loaded = threading.Event()  # set when every load was attempted, failed or not
        for name, config in settings.datastores.items():
            try:
                self._stores[name] = Datastore.open(config.path)
                self._state[name] = "loading"
            except (LessError, OSError, ValueError, KeyError) as exc:
                log.error("datastore %r at %s cannot be opened: %s", name, config.path, exc)
                self._state[name] = f"failed: {exc}"

    def start_loading(self) -> threading.Thread:
        """Loads every engine in a daemon thread, one after another."""
        thread = threading.Thread(target=self._load_all, name="less-engine-loader", daemon=True)
        thread.start()
        return thread

    def _load_all(self) -> None:
        for name, store in self._stores.items():
            try:
                engine = self._factory(store, self.settings.datastores[name], self.settings.device)
            except (
                Exception
            ) as exc:  # any load failure must mark the datastore, not kill the thread
                log.exception("loading datastore %r failed", name)
                with self._lock:
                    self._state[name] = f"failed: {exc}"
                continue
            with self._lock:
                self._engines[name] = engine
                self._state[name] = "ready"
            log.info(
                "datastore %r version %s ready (N=%d) on %s",
                name,
                store.version,
                store.n,
                engine.device,
            )
        self.loaded.set()

    @property
    def ready(self) -> bool:
        with self._lock:
            return len(self._engines) == len(self.settings.datastores)

    def states(self) -> dict[str, str]:
        with self._lock:
            return dict(self._state)

    def names(self) -> list[str]:
        return list(self._stores)

    def store(self, name: str) -> Datastore:
        """The opened datastore (404 if it does not exist or could not be opened)."""
        store = self._stores.get(name)
        if store is None:
            raise ServiceError(404, f"datastore {name!r} not found")
        return store

    def summary(self, name: str) -> DatastoreSummary:
        return summarize(name, self.store(name))

    def engine(self, name: str) -> QueryEngine:
        """The loaded engine; 503 ``overloaded`` while it loads or if loading failed."""
        with self._lock:
            engine = self._engines.get(name)
            state = self._state.get(name, "unknown")
        if engine is None:
            raise ServiceError(
                503,
                f"datastore {name!r} is not ready ({state})",
                retry_after=self.settings.retry_after_unavailable_s,
            )
        return engine

    def max_target_tokens(self, name: str) -> int:
        """Configured token limit per target, by default the datastore's max_length."""
        configured = self.settings.max_target_tokens
        return (
            configured
            if configured is not None
            else self.store(name).manifest.tokenization.max_length
        )


def gpu_memory_bytes() -> float | None:
    """Bytes allocated by torch on the current CUDA device, or None without CUDA."""
    return float(torch.cuda.memory_allocated()) if torch.cuda.is_available() else None
