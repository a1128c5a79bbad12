"""The service's long-lived parts, built once per app and started/stopped by its lifespan."""

from __future__ import annotations

import logging

from service.access import Access, effective_settings
from service.auth import AdminKeys, KeyRing, RateLimiter
from service.cache import SelectionCache
from service.jobs import JobRunner, JobStore
from service.metrics import Metrics
from service.registry import EngineFactory, Registry, default_engine_factory, gpu_memory_bytes
from service.selector import Selector
from service.settings import ServiceSettings
from service.worker import Worker

log = logging.getLogger(__name__)


class Services:
    """Registry, worker, cache, jobs, auth and metrics of one app instance."""

    def __init__(
        self, settings: ServiceSettings, engine_factory: EngineFactory = default_engine_factory
    ):
        # Datastores and teams changed through the admin API (its state file) win over the file.
        settings, state = effective_settings(settings)
        self.settings = settings
        self.registry = Registry(settings, engine_factory)
        self.keyring = KeyRing(settings.teams)
        self.limiter = RateLimiter(settings)
        self.admin_keys = AdminKeys(settings.admin_key_sha256)
        self.access = Access(settings, state, self.keyring, self.limiter, self.registry)
        self.metrics = Metrics(
            queue_depth=lambda: float(self.worker.depth), gpu_memory=gpu_memory_bytes
        )
        self.worker = Worker(settings, self.registry, self.metrics)
        self.selector = Selector(
            settings, self.registry, self.worker, SelectionCache(settings.cache_size), self.metrics
        )
        self.jobs = JobStore(settings.resolved_jobs_dir)
        self.job_runner = JobRunner(self.jobs, self.selector, self.registry)

    def start(self) -> None:
        """Starts engine loading, the worker and the job runner (all background threads)."""
        self.registry.start_loading()
        self.worker.start()
        self.job_runner.start()
        log.info("service started: datastores %s, jobs in %s", self.registry.names(), self.jobs.dir)

    def stop(self) -> None:
        self.registry.stop()
        self.job_runner.stop()
        self.worker.stop()
