"""The datastores the service knows: manifests read at start, engines loaded in the background.

``/healthz`` answers while engines load; ``/readyz`` reports ready once every datastore's engine
is loaded. A datastore that fails to load stays "failed" (logged, shown by /readyz) and its
requests answer 503 instead of taking the process down.

New versions are picked up without a restart: ``reload`` (and, every ``reload_interval_s``, a
daemon thread) notices when a datastore's ``CURRENT`` names another version, opens it and builds
a fresh engine for it in the background while the old one keeps answering, then replaces the
(store, engine) pair under the lock in one step. A request takes the pair once (``snapshot``,
in ``Selector.prepare``) and is answered by that engine, so its k, weights, answer, reported
version and cache key all come from one version; the old engine lives until its last request
is answered. A version whose engine fails to load is logged and left; the old one serves on.

A broken datastore fails alone: one that cannot be opened at start (missing ``CURRENT``, a
manifest that is not a valid manifest) or whose engine cannot be loaded (a truncated feature
file, a corrupt adapter, the wrong model) is "failed: <reason>" in ``states()`` while the
others serve. Only versions whose manifest was read and summarised are ever listed, so listing
datastores cannot fail because of one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from indexer.datastore import Datastore, current_version, index_sizes
from indexer.query import QueryEngine
from less_core.errors import IntegrityError, LessError
from less_wire import CheckpointInfo, DatastoreSummary, ProjectorInfo
from service.errors import ServiceError
from service.settings import DatastoreConfig, ServiceSettings

log = logging.getLogger(__name__)

EngineFactory = Callable[[Datastore, DatastoreConfig, str], QueryEngine]


def default_engine_factory(store: Datastore, config: DatastoreConfig, device: str) -> QueryEngine:
    return QueryEngine(store, config.model_dir, device)


def reason(exc: BaseException) -> str:
    """An error as a datastore state's reason: its message, or its type if it has none."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


def open_summarized(
    name: str, root: Path, version: str | None = None
) -> tuple[Datastore, DatastoreSummary]:
    """Opens a version and summarises it: a manifest the API cannot describe fails here, at
    open, instead of failing every listing later.

    Raises:
        IntegrityError: the summary cannot be made from the manifest.
        LessError, OSError: the version cannot be opened.
    """
    store = Datastore.open(root, version)
    try:
        summary = summarize(name, store)
    except Exception as exc:
        raise IntegrityError(f"manifest of version {store.version} is unusable: {exc}") from exc
    return store, summary


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
        n_shards=len(m.shards),
        index_factory=m.index.factory,
        size_bytes=index_sizes(store).total_bytes,
        fields=[] if m.metadata is None else [f.name for f in m.metadata.fields],
    )


class Registry:
    """Datastores by name, their summaries, and their engines once loaded."""

    def __init__(
        self, settings: ServiceSettings, engine_factory: EngineFactory = default_engine_factory
    ):
        self.settings = settings
        self._factory = engine_factory
        self._stores: dict[str, Datastore] = {}
        self._summaries: dict[str, DatastoreSummary] = {}  # of the version in _stores
        self._engines: dict[str, QueryEngine] = {}
        self._state: dict[str, str] = {}
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()  # one reload at a time (thread or direct call)
        self._failed_versions: dict[str, str] = {}  # name -> version whose engine failed to load
        self._stop = threading.Event()
        self.loaded = threading.Event()  # set when every load was attempted, failed or not
        for name, config in settings.datastores.items():
            try:
                self._stores[name], self._summaries[name] = open_summarized(name, config.path)
                self._state[name] = "loading"
            except Exception as exc:  # whatever is wrong with one datastore, the others serve
                log.error("datastore %r at %s cannot be opened: %s", name, config.path, exc)
                self._state[name] = f"failed: {reason(exc)}"

    def start_loading(self) -> threading.Thread:
        """Loads every engine in a daemon thread, one after another, then watches for new
        versions every ``reload_interval_s`` (0: never) until ``stop``."""
        thread = threading.Thread(target=self._load_and_watch, name="less-engines", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ends the version watch (engines stay usable)."""
        self._stop.set()

    def add(self, name: str, config: DatastoreConfig) -> threading.Thread:
        """Adds a datastore at run time (admin API): "loading" while a daemon thread opens it
        and loads its engine, then "ready" or "failed: ..."; requests get 404 until it is open.

        Raises:
            ValueError: the name is taken.
        """
        with self._lock:
            if name in self.settings.datastores:
                raise ValueError(f"datastore {name!r} exists")
            datastores = {**self.settings.datastores, name: config}
            self.settings = self.settings.model_copy(update={"datastores": datastores})
            self._state[name] = "loading"
        thread = threading.Thread(
            target=self._load_added, args=(name,), name=f"less-add-{name}", daemon=True
        )
        thread.start()
        return thread

    def _load_added(self, name: str) -> None:
        try:
            result = self.reload(name)[name]
        except Exception as exc:  # e.g. removed before its load began
            log.warning("datastore %r added at run time was not loaded: %s", name, exc)
            return
        with self._lock:
            if self._state.get(name) == "loading" and name not in self._engines:
                self._state[name] = result if result.startswith("failed:") else f"failed: {result}"

    def remove(self, name: str) -> None:
        """Forgets a datastore at run time (admin API); requests already holding its engine
        finish on it. Waits for a reload in progress, so none brings it back."""
        with self._reload_lock, self._lock:
            datastores = {n: c for n, c in self.settings.datastores.items() if n != name}
            self.settings = self.settings.model_copy(update={"datastores": datastores})
            self._summaries.pop(name, None)
            for table in (self._stores, self._engines, self._state, self._failed_versions):
                table.pop(name, None)

    def _load_and_watch(self) -> None:
        self._load_all()
        interval = self.settings.reload_interval_s
        while interval > 0 and not self._stop.wait(interval):
            try:
                self.reload(retry_failed=False)
            except Exception:  # the watch must outlive any one check
                log.exception("checking datastores for new versions failed")

    def _load_all(self) -> None:
        with self._lock:
            stores = list(self._stores.items())
        for name, store in stores:
            try:
                engine = self._factory(store, self.settings.datastores[name], self.settings.device)
            except (
                Exception
            ) as exc:  # any load failure must mark the datastore, not kill the thread
                log.exception("loading datastore %r failed", name)
                with self._lock:
                    if self._stores.get(name) is store:  # not replaced or removed meanwhile
                        self._state[name] = f"failed: {reason(exc)}"
                continue
            with self._lock:
                if self._stores.get(name) is not store:  # reloaded or removed meanwhile
                    continue
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
        with self._lock:
            return list(self._stores)

    def store(self, name: str) -> Datastore:
        """The opened datastore (404 if it does not exist or could not be opened)."""
        return self.snapshot(name)[0]

    def snapshot(self, name: str) -> tuple[Datastore, QueryEngine | None]:
        """The datastore version and its engine (None while it loads), read together: a
        request holding both is checked and answered by one version, even across a reload."""
        with self._lock:
            store = self._stores.get(name)
            engine = self._engines.get(name)
        if store is None:
            raise ServiceError(404, f"datastore {name!r} not found")
        return store, engine

    def summary(self, name: str) -> DatastoreSummary:
        """The served version's summary, made when it was opened (404 like ``store``)."""
        with self._lock:
            summary = self._summaries.get(name) if name in self._stores else None
        if summary is None:
            raise ServiceError(404, f"datastore {name!r} not found")
        return summary

    def engine(self, name: str, version: str | None = None) -> QueryEngine:
        """The loaded engine; 503 ``overloaded`` while it loads or if loading failed, and when
        ``version`` is given but the datastore has moved to another one (retry: the request is
        checked again against the new version)."""
        with self._lock:
            engine = self._engines.get(name)
            state = self._state.get(name, "unknown")
        if engine is None:
            raise ServiceError(
                503,
                f"datastore {name!r} is not ready ({state})",
                retry_after=self.settings.retry_after_unavailable_s,
            )
        if version is not None and engine.store.version != version:
            raise ServiceError(
                503,
                f"datastore {name!r} moved from version {version} to {engine.store.version} "
                "while the request waited; retry",
                retry_after=self.settings.retry_after_busy_s,
            )
        return engine

    def reload(self, name: str | None = None, *, retry_failed: bool = True) -> dict[str, str]:
        """Switches datastores whose ``CURRENT`` names a new version to it (see the module
        docstring); blocks while the new engines load.

        Args:
            name: One datastore (default: all).
            retry_failed: Try again a version whose engine failed to load before (the periodic
                watch does not, so a broken version is not reloaded every interval).

        Returns:
            Per datastore checked: ``unchanged``, ``loading`` (its first load is still running),
            ``reloaded <old> -> <new>`` or ``failed <version>: <error>``.
        """
        names = [name] if name is not None else list(self.settings.datastores)
        with self._reload_lock:
            return {n: self._reload_one(n, retry_failed) for n in names}

    def _reload_one(self, name: str, retry_failed: bool) -> str:
        config = self.settings.datastores[name]
        try:
            version = current_version(config.path)
        except (LessError, OSError) as exc:
            return f"failed: {exc}"
        with self._lock:
            old, old_engine = self._stores.get(name), self._engines.get(name)
            state = self._state.get(name, "")
        if old is not None and old.version == version:
            return "unchanged"
        if old is not None and old_engine is None and state == "loading":
            return "loading"
        if not retry_failed and self._failed_versions.get(name) == version:
            return f"failed {version}: see the log"
        log.info("datastore %r: loading version %s in the background", name, version)
        try:
            store, summary = open_summarized(name, config.path, version)
            engine = self._factory(store, config, self.settings.device)
        except Exception as exc:  # the old version keeps serving
            log.exception("datastore %r: version %s failed to load", name, version)
            self._failed_versions[name] = version
            with self._lock:
                if name not in self._engines:
                    self._state[name] = f"failed: {reason(exc)}"
            return f"failed {version}: {reason(exc)}"
        with self._lock:  # one step: no request sees this store with the other's engine
            self._stores[name] = store
            self._summaries[name] = summary
            self._engines[name] = engine
            self._state[name] = "ready"
        self._failed_versions.pop(name, None)
        previous = old.version if old is not None else "none"
        log.info(
            "datastore %r switched from version %s to %s (N=%d)", name, previous, version, store.n
        )
        return f"reloaded {previous} -> {version}"

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
