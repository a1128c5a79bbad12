"""From the wire contract to the library's types: one conversion for the service and the CLIs.

A ``less_wire.SelectRequest`` has been validated when it was parsed (targets' formats, k or
fraction, aggregate); these functions only change representation, they never validate again.
"""

from __future__ import annotations

from collections.abc import Sequence

from indexer.search import SearchParams
from less_core.config import SelectionConfig
from less_core.data import Example
from less_wire import SelectRequest, TargetExample


def examples_from_targets(targets: Sequence[TargetExample]) -> list[Example]:
    """Library examples of parsed wire targets, in order (ids may be empty)."""
    return [
        Example(
            id=t.id or "",
            messages=None
            if t.messages is None
            else tuple({"role": m.role, "content": m.content} for m in t.messages),
            prompt=t.prompt,
            completion=t.completion,
            subtask=t.subtask,
        )
        for t in targets
    ]


def search_params(request: SelectRequest) -> SearchParams:
    """The request's approximate-index options (defaults when it gives none)."""
    if request.search is None:
        return SearchParams()
    return SearchParams(**request.search.model_dump())


def selection_config(request: SelectRequest) -> SelectionConfig:
    """The selection size, aggregation and checkpoints a request asks for."""
    return SelectionConfig(
        k=request.k,
        fraction=request.fraction,
        aggregate=request.aggregate,
        checkpoints=tuple(request.checkpoints) if request.checkpoints else None,
    )
