"""Which real task source the demo and the splits use, and getting its task folders.

Both sources end as task folders in BIG-bench's format, read by :mod:`demo.sources.tasks`:

* ``bigbench``: the ``task.json`` files of the ``bigbench`` 1.0.0 sdist
  (:func:`~demo.sources.fetch.fetch_bigbench_sdist`);
* ``openai-evals``: the OpenAI evals registry data of the ``evals`` wheel, converted
  (:func:`~demo.sources.evals_registry.fetch_evals_registry`).

``auto`` takes BIG-bench when its task files are already cached or the package index lists
``bigbench-1.0.0.tar.gz``, and the evals registry when the index answers without it (some
indexes only serve ``bigbench`` 0.0.1, which ships no task files). The choice and its
reason are logged and returned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from demo.sources._common import SourceError
from demo.sources.config import (
    DEFAULT_TARGET_TASKS_BY_SOURCE,
    SOURCE_AUTO,
    SOURCE_BIGBENCH,
    SOURCE_CHOICES,
    SOURCE_OPENAI_EVALS,
)
from demo.sources.evals_registry import EVALS_TASKS_DIRNAME, fetch_evals_registry, is_converted
from demo.sources.fetch import (
    BIGBENCH_PROJECT,
    BIGBENCH_SDIST,
    TASKS_DIRNAME,
    TASKS_MARKER,
    fetch_bigbench_sdist,
)
from demo.sources.package_index import NotListedError, default_index_url, resolve_on_index
from less_core.errors import ConfigError

logger = logging.getLogger(__name__)

#: How each source is named in messages.
SOURCE_TITLES = {
    SOURCE_BIGBENCH: "BIG-bench 1.0.0 (bigbench sdist)",
    SOURCE_OPENAI_EVALS: "OpenAI evals registry (evals wheel)",
}


@dataclass(frozen=True)
class TaskSource:
    """A source whose task folders are ready: what it is, where they are, why it was chosen."""

    name: str
    tasks_dir: Path
    reason: str

    @property
    def title(self) -> str:
        """The source's name for people."""
        return SOURCE_TITLES[self.name]

    @property
    def default_target_tasks(self) -> tuple[str, ...]:
        """The target tasks splits use unless told otherwise."""
        return DEFAULT_TARGET_TASKS_BY_SOURCE[self.name]


def _check_choice(requested: str) -> None:
    if requested not in SOURCE_CHOICES:
        raise ConfigError(f"source must be one of {list(SOURCE_CHOICES)}, got {requested!r}")


def choose_source(
    requested: str,
    cache_dir: Path,
    *,
    index_url: str | None = None,
) -> tuple[str, str]:
    """Resolve ``auto`` to a source; any other choice is returned as is.

    ``auto`` picks, in order: BIG-bench when its task files (or its sdist) are already in
    ``cache_dir``; BIG-bench when the index lists ``bigbench-1.0.0.tar.gz``; the OpenAI
    evals registry when the index answers without it; the evals registry when the index
    cannot be read but a converted copy is cached.

    Args:
        requested: ``auto``, ``bigbench`` or ``openai-evals``.
        cache_dir: The cache root both sources keep their task folders in.
        index_url: Simple-API index to ask; defaults to the one pip is configured with.

    Returns:
        ``(source, reason)``.

    Raises:
        ConfigError: ``requested`` is not a known choice.
        SourceError: ``auto`` and the index cannot be read, with nothing cached to fall back on.
    """
    _check_choice(requested)
    if requested != SOURCE_AUTO:
        return requested, f"--source {requested} was asked for"
    cache_dir = Path(cache_dir)
    if (cache_dir / TASKS_DIRNAME / TASKS_MARKER).is_file():
        return SOURCE_BIGBENCH, f"BIG-bench task files are already in {cache_dir / TASKS_DIRNAME}"
    if (cache_dir / BIGBENCH_SDIST).is_file():
        return SOURCE_BIGBENCH, f"{BIGBENCH_SDIST} is already in {cache_dir}"
    index = index_url or default_index_url()
    try:
        resolve_on_index(index, BIGBENCH_PROJECT, BIGBENCH_SDIST)
    except NotListedError as exc:
        return SOURCE_OPENAI_EVALS, f"{exc}, so BIG-bench task files cannot be fetched"
    except SourceError as exc:
        if is_converted(cache_dir / EVALS_TASKS_DIRNAME):
            return SOURCE_OPENAI_EVALS, f"{exc}; a converted copy is cached"
        raise SourceError(
            f"source auto cannot tell whether {BIGBENCH_SDIST} is on the index: {exc} "
            f"(choose one: --source {SOURCE_BIGBENCH} or --source {SOURCE_OPENAI_EVALS})"
        ) from exc
    return SOURCE_BIGBENCH, f"{BIGBENCH_SDIST} is listed on {index}"


def prepare_task_source(
    requested: str,
    cache_dir: Path,
    *,
    index_url: str | None = None,
    refetch: bool = False,
    sdist: Path | None = None,
    wheel: Path | None = None,
    keep_download: bool = False,
) -> TaskSource:
    """Choose a source (see :func:`choose_source`) and make its task folders ready (cached).

    Args:
        requested: ``auto``, ``bigbench`` or ``openai-evals``.
        cache_dir: Cache root; BIG-bench goes to ``bigbench_tasks``, the evals registry to
            ``openai_evals_tasks``.
        index_url: Package index to check and fetch from (default: pip's configuration).
        refetch: Download and extract / convert again even if cached.
        sdist: A local ``bigbench-1.0.0.tar.gz``: implies BIG-bench under ``auto``.
        wheel: A local ``evals`` wheel: implies the evals registry under ``auto``.
        keep_download: Keep the downloaded sdist / wheel in ``cache_dir``.

    Returns:
        The ready source.

    Raises:
        ConfigError: Unknown choice, or a local file of the other source.
        SourceError, IntegrityError: Fetching or checking failed (one-line messages).
    """
    _check_choice(requested)
    if sdist is not None and wheel is not None:
        raise ConfigError("give a BIG-bench sdist or an evals wheel, not both")
    if requested == SOURCE_AUTO and sdist is not None:
        name, reason = SOURCE_BIGBENCH, f"a local {BIGBENCH_SDIST} was given"
    elif requested == SOURCE_AUTO and wheel is not None:
        name, reason = SOURCE_OPENAI_EVALS, "a local evals wheel was given"
    else:
        name, reason = choose_source(requested, cache_dir, index_url=index_url)
    if name == SOURCE_BIGBENCH and wheel is not None:
        raise ConfigError("an evals wheel was given but the source is bigbench")
    if name == SOURCE_OPENAI_EVALS and sdist is not None:
        raise ConfigError("a BIG-bench sdist was given but the source is openai-evals")
    logger.info("task source: %s, because %s", SOURCE_TITLES[name], reason)
    if name == SOURCE_BIGBENCH:
        tasks_dir = fetch_bigbench_sdist(
            cache_dir, force=refetch, sdist=sdist, index_url=index_url, keep_sdist=keep_download
        )
    else:
        tasks_dir = fetch_evals_registry(
            cache_dir, force=refetch, wheel=wheel, index_url=index_url, keep_wheel=keep_download
        )
    return TaskSource(name=name, tasks_dir=tasks_dir, reason=reason)
