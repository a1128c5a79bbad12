"""The results file: per-seed values in the issue's shape, their summaries and paired tests.

``heldout_loss[setting][task][method]`` (and ``accuracy`` where the task has options) is the
list of per-seed values, aligned with ``seeds``; ``null`` marks a seed a method was not run at
(``less_dense`` exists only for ``scale.dense_seeds`` in ``scale.dense_settings``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench.evaluation.plan import RANDOM, SETTINGS, Scale
from bench.evaluation.stats import mean_std, paired

if TYPE_CHECKING:
    from bench.evaluation.run import Cell

METRICS: dict[str, tuple[str, bool]] = {
    # results key: (key in an eval dict, lower is better)
    "heldout_loss": ("loss", True),
    "accuracy": ("accuracy", False),
}
REFERENCE = "less"


def per_seed(
    scale: Scale, cells: dict[str, dict[int, Cell]], methods: Sequence[str], field: str
) -> dict[str, dict[str, dict[str, list[float | None]]]]:
    """``[setting][task][method]`` -> values per seed (None where not run / not measured)."""
    out: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for setting in SETTINGS:
        out[setting] = {}
        for task in scale.target_tasks:
            by_method: dict[str, list[float | None]] = {}
            for method in methods:
                values = [
                    cells[setting][seed].evals[task].get(method, {}).get(field)
                    for seed in scale.seeds
                ]
                if any(v is not None for v in values):
                    by_method[method] = values
            if by_method:
                out[setting][task] = by_method
    return out


def pairs_of(methods: Sequence[str]) -> list[tuple[str, str]]:
    """Every method against random, and LESS against every other method."""
    out = [(m, RANDOM) for m in methods if m != RANDOM]
    out += [(REFERENCE, m) for m in methods if m not in (REFERENCE, RANDOM)]
    return [p for p in out if p[0] in methods]


def compare(
    values: dict[str, dict[str, list[float | None]]], a: str, b: str, lower_is_better: bool
) -> dict[str, Any] | None:
    """Paired comparison of a and b over every (task, seed) cell where both were measured."""
    xs, ys = [], []
    for by_method in values.values():
        for x, y in zip(by_method.get(a, []), by_method.get(b, [])):
            if x is not None and y is not None:
                xs.append(x)
                ys.append(y)
    if not xs:
        return None
    return paired(a, b, xs, ys, lower_is_better).to_json()


def summarize(values: dict[str, dict[str, list[float | None]]]) -> dict[str, Any]:
    """``[task][method]`` -> mean, std and n over the seeds measured."""
    out: dict[str, Any] = {}
    for task, by_method in values.items():
        out[task] = {}
        for method, vals in by_method.items():
            got = [v for v in vals if v is not None]
            mean, std = mean_std(got)
            out[task][method] = {"mean": mean, "std": std, "n": len(got)}
    return out


def assemble(
    *,
    scale: Scale,
    cells: dict[str, dict[int, Cell]],
    base: dict[str, dict[str, Any]],
    methods: Sequence[str],
    dsir_unavailable: str | None,
    fidelity: dict[str, Any] | None,
    unit_seconds: dict[str, dict[str, float]],
    wall_s: float,
    info: dict[str, Any],
) -> dict[str, Any]:
    """The results document (the command line is added by the caller)."""
    report: dict[str, Any] = {
        "benchmark": "evaluate",
        "scale": scale.name,
        "label": (
            "FULL evaluation"
            if scale.name == "full"
            else f"{scale.name.upper()} SCALE: a small "
            "run for trying the command out, not the evaluation"
        ),
        "seeds": list(scale.seeds),
        "tasks": list(scale.target_tasks),
        "settings": list(SETTINGS),
        "methods": list(methods),
        "scale_config": scale.to_json(),
        "dsir": {"ran": dsir_unavailable is None, "why_not": dsir_unavailable},
        "less_dense": {"seeds": list(scale.dense_seeds), "settings": list(scale.dense_settings)},
        "base_model": base,
        "steps": {s: cells[s][scale.seeds[0]].steps for s in SETTINGS},
        **info,
    }
    report["summary"], report["paired"] = {}, {}
    for key, (field, lower) in METRICS.items():
        values = per_seed(scale, cells, methods, field)
        report[key] = values
        report["summary"][key] = {s: summarize(values[s]) for s in SETTINGS}
        report["paired"][key] = {
            s: [c for a, b in pairs_of(methods) if (c := compare(values[s], a, b, lower))]
            for s in SETTINGS
        }
    report["own_task_share"] = {
        task: {
            m: [cells[SETTINGS[0]][seed].precision[task].get(m) for seed in scale.seeds]
            for m in methods
            if m in cells[SETTINGS[0]][scale.seeds[0]].precision[task]
        }
        for task in scale.target_tasks
    }
    report["fidelity"] = fidelity
    report["unit_seconds"] = unit_seconds
    report["compute_s"] = sum(v["seconds"] for v in unit_seconds.values())
    report["wall_s"] = wall_s
    return report
