"""From the wire contract to the library's types: one conversion for the service and the CLIs.

A ``less_wire.SelectRequest`` has been validated when it was parsed (targets' formats, k or
fraction, aggregate); these functions only change representation, they never validate again.
"""

from __future__ import annotations

from collections.abc import Sequence

from indexer.pool_metadata import Condition
from indexer.search import SearchParams
from indexer.steered import Steering
from less_core.config import SelectionConfig
from less_core.data import Example
from less_wire import FieldCondition, SelectRequest, TargetExample


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


def condition_of(condition: FieldCondition) -> Condition:
    """The library's form of one wire filter condition."""
    return Condition(
        eq=condition.eq,
        in_=None if condition.in_ is None else tuple(condition.in_),
        not_in=None if condition.not_in is None else tuple(condition.not_in),
        gt=condition.gt,
        gte=condition.gte,
        lt=condition.lt,
        lte=condition.lte,
    )


def steering_of(request: SelectRequest) -> Steering:
    """The request's steering options (filter, budget, balance, guard, avoid weight, explain)."""
    return Steering(
        explain=request.explain,
        filter=None
        if request.filter is None
        else {name: condition_of(c) for name, c in request.filter.items()},
        token_budget=request.token_budget,
        balance=request.balance,
        max_similarity=request.max_similarity,
        avoid_weight=request.avoid_weight,
    )
