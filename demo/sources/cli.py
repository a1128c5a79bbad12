"""``python -m demo.sources.cli``: fetch real task files and build the splits.

``--source`` picks where the tasks come from: ``bigbench`` (the ``bigbench`` 1.0.0 sdist),
``openai-evals`` (the OpenAI evals registry in the ``evals`` wheel, converted to BIG-bench's
format) or ``auto`` (the default: BIG-bench when the package index lists it, else the
evals registry; see :mod:`demo.sources.choice`). Without ``--target-tasks`` the source's
own default target tasks are used.

The split settings' flags are generated from :class:`~demo.sources.config.BigBenchConfig`
(``--target-tasks a,b``, ``--per-task-pool N``, ``--no-shuffle-choices``, ...), so their
defaults and help live in one place. Exit status as in ``less_wire.exit_codes``: 0 success;
2 bad flags or settings; 1 a failed download, check or anything unexpected; 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from demo.sources._common import add_logging_args, run_cli
from demo.sources.choice import prepare_task_source
from demo.sources.config import SOURCE_AUTO, SOURCE_CHOICES, BigBenchConfig
from demo.sources.evals_registry import EVALS_TASKS_DIRNAME, EVALS_WHEEL
from demo.sources.fetch import BIGBENCH_SDIST, TASKS_DIRNAME
from demo.sources.splits import build_bigbench_splits
from demo.sources.tasks import TaskInfo, describe_tasks
from indexer.cli_args import add_dataclass_args, dataclass_from_args
from less_wire import EXIT_OK

PROG = "python -m demo.sources.cli"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m demo.sources.cli``.

    Returns:
        A parser with the fetch / output flags and one flag per :class:`BigBenchConfig` field.
    """
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fetch real task files (once) and build pool/targets/eval splits.",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        required=True,
        help=f"cache root; task files go to <cache-dir>/{TASKS_DIRNAME} (BIG-bench) or "
        f"<cache-dir>/{EVALS_TASKS_DIRNAME} (OpenAI evals)",
    )
    p.add_argument(
        "--source",
        choices=SOURCE_CHOICES,
        default=SOURCE_AUTO,
        help="where the tasks come from: bigbench, openai-evals, or auto (BIG-bench 1.0.0 when "
        "the package index lists it, else the OpenAI evals registry) (default: auto)",
    )
    p.add_argument("--out", type=Path, help="output directory of the splits (omit to only fetch)")
    p.add_argument("--sdist", type=Path, help=f"local {BIGBENCH_SDIST} (no download)")
    p.add_argument("--wheel", type=Path, help=f"local {EVALS_WHEEL} (no download)")
    p.add_argument(
        "--index-url",
        help="simple-API package index (default: pip's: $PIP_INDEX_URL, else pip's configured "
        "index-url, else pip's built-in default)",
    )
    p.add_argument(
        "--keep-download",
        "--keep-sdist",
        dest="keep_sdist",
        action="store_true",
        help="keep the download in the cache (BIG-bench's 358 MB tarball or the 46 MB evals wheel)",
    )
    p.add_argument(
        "--list-tasks",
        action="store_true",
        help="print every task's usable examples and eligibility, then exit",
    )
    p.add_argument(
        "--no-pool-without-targets",
        action="store_true",
        help="do not write pool_without_targets.jsonl",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace splits in --out that were built from another config",
    )
    p.add_argument(
        "--refetch",
        action="store_true",
        help="download and extract the task files again even if present",
    )
    add_dataclass_args(p, BigBenchConfig)
    add_logging_args(p)
    return p


def _print_tasks(infos: Sequence[TaskInfo]) -> None:
    """The ``--list-tasks`` table: one line per task."""
    print(
        f"{'task':45} {'raw':>6} {'usable':>6} {'bad':>4} {'subs':>4} {'mc':>5} "
        f"{'median':>6}  eligible"
    )
    for t in infos:
        print(
            f"{t.name:45} {t.n_raw:6d} {t.n_usable:6d} {t.n_malformed:4d} {t.subtasks:4d} "
            f"{t.multiple_choice:5.2f} {t.median_chars:6d}  "
            f"{'yes' if t.eligible else 'no: ' + t.reason}"
        )


def _run(args: argparse.Namespace) -> int:
    """Fetch, then list the tasks or build the splits, as the flags say."""
    # Built before fetching, so a bad setting fails at once instead of after a download.
    config: BigBenchConfig = dataclass_from_args(BigBenchConfig, args)
    source = prepare_task_source(
        args.source,
        args.cache_dir,
        index_url=args.index_url,
        refetch=args.refetch,
        sdist=args.sdist,
        wheel=args.wheel,
        keep_download=args.keep_sdist,
    )
    tasks_dir = source.tasks_dir
    if args.target_tasks is None:  # not given: the source's own defaults
        config = dataclasses.replace(config, target_tasks=source.default_target_tasks)
    if args.list_tasks:
        _print_tasks(describe_tasks(tasks_dir, config))
        return EXIT_OK
    if args.out is None:
        print(f"{source.title} task files at {tasks_dir}")
        return EXIT_OK
    summary = build_bigbench_splits(
        tasks_dir,
        args.out,
        config,
        exclude_target_tasks_from_pool=not args.no_pool_without_targets,
        force=args.force,
    )
    state = "up to date" if summary.cached else "written"
    print(
        f"splits {state} at {summary.out_dir} ({source.title}): pool {summary.n_pool} rows from "
        f"{len(summary.pool_tasks)} pool tasks + targets {', '.join(summary.target_tasks)}"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status (see the module doc). Bad flags exit through argparse with status 2.
    """
    return run_cli(build_parser().parse_args(argv), _run)


if __name__ == "__main__":
    raise SystemExit(main())
