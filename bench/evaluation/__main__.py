"""``./run evaluate [--scale demo|full]``: the whole evaluation, resumable, into one results file.

Writes ``<out>.json`` (the per-seed values and the paired comparisons), ``<out>.md`` (the
tables) and ``<out>.png`` (differences to random per task with error bars over seeds). Run it
again after a kill: finished units are read back from the cache directory.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch

from bench.evaluation.plan import (
    SCALES,
    SETTINGS,
    SOURCE_BIGBENCH,
    SOURCES,
    Scale,
    count_units,
    predict_s,
    scale_for,
)
from bench.evaluation.plots import plot
from bench.evaluation.report import markdown
from bench.evaluation.run import RunOptions, run
from demo.sources.choice import SOURCE_AUTO, choose_source
from indexer.fsutil import atomic_write_json, atomic_write_text
from less_core.errors import LessError
from less_wire import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

log = logging.getLogger("bench.evaluation")
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="./run evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument(
        "--source",
        choices=(SOURCE_AUTO, *SOURCES),
        default=SOURCE_AUTO,
        help="real tasks: the bigbench sdist, or the OpenAI evals registry (converted by "
        "demo.sources); auto: BIG-bench when the package index lists it, else the registry "
        "(as ./run demo); picks the target tasks",
    )
    ap.add_argument("--data-dir", default="data", help="model and BIG-bench cache (as the demo)")
    ap.add_argument(
        "--cache-dir", default=None, help="units, warmups, datastores (default data/evaluate/SCALE)"
    )
    ap.add_argument(
        "--tasks-dir",
        default=None,
        help="an extracted BIG-bench task directory (<task>/task.json) instead of the sdist",
    )
    ap.add_argument(
        "--bigbench-sdist", default=None, help="a local bigbench-1.0.0.tar.gz (no download)"
    )
    ap.add_argument(
        "--target-tasks", default=None, help="comma-separated target tasks (default: the scale's)"
    )
    ap.add_argument(
        "--out",
        default=None,
        help="results path without suffix (default bench/results/evaluate for full, "
        "bench/results/evaluate_SCALE otherwise)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's choice; 1 can be faster on a machine shared with "
        "other jobs, where waiting threads stall every small op)",
    )
    ap.add_argument("--plan", action="store_true", help="print the scale's plan and exit")
    return ap


def _scale(ns: argparse.Namespace) -> Scale:
    scale = scale_for(ns.scale, ns.source)
    if ns.target_tasks:
        scale = scale.with_targets(tuple(t for t in ns.target_tasks.split(",") if t))
    return scale


def _plan_lines(scale: Scale) -> list[str]:
    sizes = scale.pool_sizes()
    lines = [f"scale {scale.name}: {scale.to_json()}"]
    for setting in SETTINGS:
        k = scale.k(sizes[setting])
        lines.append(
            f"{setting}: ~{sizes[setting]} pool rows, k = {k}, {scale.steps(k)} optimizer steps "
            f"per selection training, {scale.steps(sizes[setting])} for the whole pool"
        )
    lines.append(f"units: {count_units(scale)}")
    predicted = predict_s(scale)
    lines.append(
        "predicted minutes (cost model of bench.evaluation.plan, 2-core CPU): "
        + ", ".join(f"{kind} {s / 60:.1f}" for kind, s in predicted.items())
        + f"; total {sum(predicted.values()) / 60:.0f}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    if ns.source == SOURCE_AUTO:
        if ns.tasks_dir or ns.bigbench_sdist:
            ns.source = SOURCE_BIGBENCH
        else:
            try:
                ns.source, why = choose_source(SOURCE_AUTO, Path(ns.data_dir))
            except LessError as exc:
                print(f"evaluate: error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            log.info("task source: %s (%s)", ns.source, why)
    if ns.plan:
        for line in _plan_lines(_scale(ns)):
            log.info("%s", line)
        return EXIT_OK
    scale = _scale(ns)
    if ns.threads:
        torch.set_num_threads(ns.threads)
    default_out = "bench/results/evaluate" + ("" if ns.scale == "full" else f"_{ns.scale}")
    out = Path(ns.out or default_out)
    options = RunOptions(
        scale=scale,
        data_dir=Path(ns.data_dir),
        cache_dir=Path(ns.cache_dir or Path(ns.data_dir) / "evaluate" / scale.name),
        source=ns.source,
        tasks_dir=Path(ns.tasks_dir) if ns.tasks_dir else None,
        sdist=Path(ns.bigbench_sdist) if ns.bigbench_sdist else None,
    )
    try:
        results = run(options)
    except LessError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("evaluate: interrupted; run it again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    args = sys.argv[1:] if argv is None else argv
    results["command"] = " ".join(["./run evaluate", shlex.join(args)]).strip()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), results)
    plot(results, out.with_suffix(".png"))
    atomic_write_text(out.with_suffix(".md"), markdown(results))
    log.info(
        "wrote %s (.json, .md, .png); wall %.1f min, compute %.1f min",
        out,
        results["wall_s"] / 60,
        results["compute_s"] / 60,
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
