"""`less-select`: select training data for a JSONL file of target examples.

    less-select --datastore NAME --targets targets.jsonl (--k N | --fraction F | --token-budget N)
                [--out FILE] [--pool pool.jsonl] [--job] [--aggregate max|mean]
                [--checkpoints a,b] [--explain] [--filter EXPR ... | --filter-json JSON]
                [--balance none|subtask] [--max-similarity X] [--avoid FILE] [--avoid-weight X]
    less-select datastores
    less-select fields NAME

Selected IDs (or, with --pool, the selected pool rows) go to --out or stdout, each with its
`explanation` under --explain; progress and summaries go to stderr. The steering flags are
`less_wire.cli_options`'s, the same as `less-index select`'s. Exit status
(`less_wire.exit_codes`, the same for every CLI of the project): 0 success; 2 bad usage, a bad
file or a request the server refused (4xx); 1 anything else (server error, no connection); 130
interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import IO, TypeVar

from pydantic import ValidationError

from less_wire import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    DatastoreFields,
    FieldSummary,
    InputFileError,
    Job,
    MetadataValue,
    SelectedExample,
    add_steering_arguments,
    describe_validation_errors,
    load_targets_jsonl,
    steering_options,
    write_selected_ids,
    write_selected_rows,
)

from ._base import SelectOptions
from ._client import LessClient
from ._constants import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
)
from ._exceptions import LessClientError, exit_status

__all__ = ["main"]

PROG = "less-select"
NumberT = TypeVar("NumberT", int, float)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI.

    Args:
        argv: Arguments without the program name; `sys.argv[1:]` when None.

    Returns:
        The exit status (see the module doc). Usage errors exit through argparse (status 2).
    """
    args = _parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format=f"{PROG}: %(levelname)s: %(message)s",
    )
    try:
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except ValidationError as exc:
        return _fail(describe_validation_errors(exc.errors()), EXIT_USAGE)
    except (InputFileError, OSError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except LessClientError as exc:
        return _fail(str(exc), exit_status(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _run_select(args: argparse.Namespace) -> int:
    targets = load_targets_jsonl(args.targets)  # before connecting: a bad file fails fast
    options: SelectOptions = {
        **steering_options(args),  # reads --avoid: a bad file fails fast too
        "k": args.k,
        "fraction": args.fraction,
        "checkpoints": args.checkpoints,
        "aggregate": args.aggregate,
        "return_scores": not args.no_scores,
        "search": _search_options(args),
    }
    with _client(args) as less:
        if args.job:
            job = less.create_job(args.datastore, targets, **options)
            print(f"job {job.id} {job.status}", file=sys.stderr)
            job = less.wait_for_job(
                job.id, poll_interval=args.poll_interval, on_progress=_progress_printer(sys.stderr)
            )
            count = _write(less.iter_job_results(job.id), args)
            source = f"job {job.id} on {args.datastore}"
        else:
            response = less.select(args.datastore, targets, **options)
            count = _write(response.selected, args)
            tokens = "" if response.n_tokens is None else f", {response.n_tokens} tokens"
            source = (
                f"{response.n_candidates} candidates in {response.datastore}@"
                f"{response.datastore_version} ({response.timings.total_ms:.0f} ms{tokens})"
            )
    what = "rows" if args.pool else "ids"
    where = "stdout" if args.out in (None, "-") else args.out
    print(f"wrote {count} selected {what} from {source} to {where}", file=sys.stderr)
    return EXIT_OK


def _search_options(args: argparse.Namespace) -> dict[str, object] | None:
    """The `search` object of the request, or None when no search flag was given."""
    given = {
        "exact": args.exact or None,
        "nprobe": args.nprobe,
        "ef_search": args.ef_search,
        "candidates": args.candidates,
    }
    options = {name: value for name, value in given.items() if value is not None}
    return options or None


def _write(selected: Iterable[SelectedExample], args: argparse.Namespace) -> int:
    out = sys.stdout if args.out in (None, "-") else args.out
    if args.pool:
        return write_selected_rows(selected, args.pool, out)
    return write_selected_ids(selected, out)


def _progress_printer(stream: IO[str]) -> Callable[[Job], None]:
    """A callback printing a job's status whenever it or the whole percent changes."""
    last: list[tuple[str, int]] = []

    def show(job: Job) -> None:
        state = (job.status, int(job.progress * 100))
        if not last or last[-1] != state:
            last[:] = [state]
            print(f"job {job.id} {job.status} {state[1]}%", file=stream, flush=True)

    return show


def _run_datastores(args: argparse.Namespace) -> int:
    with _client(args) as less:
        datastores = less.list_datastores()
    if args.json:
        for summary in datastores:
            print(summary.model_dump_json())
        return EXIT_OK
    rows = [("NAME", "VERSION", "EXAMPLES", "CHECKPOINTS", "MODEL")] + [
        (d.name, d.version, str(d.n_examples), ",".join(c.name for c in d.checkpoints), d.model_id)
        for d in datastores
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return EXIT_OK


_TOP_VALUES_SHOWN = 5


def _run_fields(args: argparse.Namespace) -> int:
    with _client(args) as less:
        fields = less.get_fields(args.name)
    if args.json:
        print(fields.model_dump_json())
        return EXIT_OK
    print(_fields_table(fields))
    return EXIT_OK


def _fields_table(fields: DatastoreFields) -> str:
    """A datastore's fields as a table: kind, missing, distinct, and a range or the top values."""
    rows = [("FIELD", "KIND", "MISSING", "DISTINCT", "VALUES")]
    rows += [
        (f.name, f.kind, str(f.n_missing), str(f.n_distinct), _field_values(f))
        for f in fields.fields
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [f"{fields.datastore}@{fields.version}: {fields.n_examples} examples"]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _field_values(field: FieldSummary) -> str:
    """`min..max` for a number field, else its most frequent values with their counts."""
    parts = []
    if field.min is not None and field.max is not None:
        parts.append(f"{field.min:g}..{field.max:g}")
    shown = field.top_values[:_TOP_VALUES_SHOWN]
    if shown:
        more = ", ..." if len(field.top_values) > len(shown) else ""
        values = ", ".join(f"{_filter_value(v.value)} ({v.count})" for v in shown)
        parts.append(values + more)
    return "  ".join(parts)


def _filter_value(value: MetadataValue) -> str:
    """A value as JSON: a string in quotes, as a --filter expression may write it."""
    return json.dumps(value, ensure_ascii=False)


def _client(args: argparse.Namespace) -> LessClient:
    return LessClient(
        base_url=args.base_url,
        api_key=args.api_key,
        timeout=DEFAULT_TIMEOUT if args.timeout is None else args.timeout,
        max_retries=args.max_retries,
    )


def _positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = _number(float, text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value:g}")
    return value


def _number(kind: Callable[[str], NumberT], text: str) -> NumberT:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one checkpoint name")
    return names


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--base-url", help=f"server root (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})"
    )
    group.add_argument("--api-key", help=f"API key (default: ${API_KEY_ENV})")
    group.add_argument("--timeout", type=float, help="seconds per request (default: 60)")
    group.add_argument(
        "--max-retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        help=f"retries of failed requests (default: {DEFAULT_MAX_RETRIES})",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log retries and other details")
    return common


def _parse_args(argv: list[str]) -> argparse.Namespace:
    common = _connection_options()
    if argv[:1] == ["datastores"]:
        listing = argparse.ArgumentParser(
            prog=f"{PROG} datastores",
            parents=[common],
            description="List the datastores your API key may use.",
        )
        listing.add_argument("--json", action="store_true", help="one JSON summary per line")
        return listing.parse_args(argv[1:], argparse.Namespace(run=_run_datastores))
    if argv[:1] == ["fields"]:
        described = argparse.ArgumentParser(
            prog=f"{PROG} fields",
            parents=[common],
            description="Show a datastore's pool metadata fields: what --filter can name.",
        )
        described.add_argument("name", metavar="NAME", help="the datastore")
        described.add_argument("--json", action="store_true", help="the fields as one JSON object")
        return described.parse_args(argv[1:], argparse.Namespace(run=_run_fields))

    if argv[:1] == ["select"]:  # the default command may also be named
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Select the training examples most influential on a JSONL of target "
        f"examples. '{PROG} datastores' lists the datastores, '{PROG} fields NAME' the "
        "metadata fields of one (for --filter).",
    )
    parser.add_argument("--datastore", required=True, help="datastore to select from")
    parser.add_argument(
        "--targets",
        required=True,
        metavar="FILE",
        help="JSONL of target examples: 'messages' or 'prompt'+'completion', "
        "optional 'id' and 'subtask'",
    )
    # Required unless --token-budget sets the size (checked after parsing).
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--k", type=_positive_int, help="number of examples to select")
    size.add_argument("--fraction", type=_fraction, help="share of the pool to select, in (0, 1]")
    parser.add_argument("--out", metavar="FILE", help="output JSONL (default: stdout)")
    parser.add_argument(
        "--pool",
        metavar="FILE",
        help="the training pool JSONL: write its selected rows (with score and subtask) "
        "instead of ids",
    )
    parser.add_argument(
        "--job", action="store_true", help="run as a background job, progress on stderr"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between job polls"
    )
    parser.add_argument("--aggregate", choices=("max", "mean"), default="max")
    parser.add_argument(
        "--checkpoints", type=_names, metavar="A,B", help="checkpoints to use (default: all)"
    )
    parser.add_argument("--no-scores", action="store_true", help="do not ask for scores")
    search = parser.add_argument_group("approximate index (ignored by exact datastores)")
    search.add_argument("--exact", action="store_true", help="scan every row exactly")
    search.add_argument("--nprobe", type=_positive_int, help="IVF lists to visit")
    search.add_argument("--ef-search", type=_positive_int, help="HNSW search breadth")
    search.add_argument(
        "--candidates", type=float, help="rows fetched per wanted row before re-ranking (>= 1)"
    )
    add_steering_arguments(parser)
    args = parser.parse_args(argv, argparse.Namespace(run=_run_select))
    if args.k is None and args.fraction is None and args.token_budget is None:
        parser.error("one of the arguments --k --fraction --token-budget is required")
    return args


if __name__ == "__main__":
    sys.exit(main())
