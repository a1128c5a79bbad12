"""The steering flags of every selecting CLI, defined once: `less-select` and `less-index select`.

`add_steering_arguments` adds them to an argparse parser; `steering_options` turns the parsed
flags into `SelectRequest` fields (only the flags given: an omitted one takes the request's
default, so a plain command sends a plain request). Bounds come from the `SelectRequest` fields
themselves, so a flag refuses exactly what the API would refuse, as an argparse error (one line,
exit status 2) before any file is read or request is sent.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypedDict, TypeVar, get_args

from pydantic import TypeAdapter, ValidationError

from .errors import describe_validation_errors
from .files import load_targets_jsonl
from .filters import FilterExpressionError, parse_filter_expressions, parse_filter_json
from .models import FieldCondition, SelectRequest, TargetExample

__all__ = ["SteeringOptions", "add_steering_arguments", "steering_options"]

NumberT = TypeVar("NumberT", int, float)

BALANCE_CHOICES: tuple[str, ...] = get_args(SelectRequest.model_fields["balance"].annotation)


class SteeringOptions(TypedDict, total=False):
    """The `SelectRequest` fields the steering flags set (a key only for a flag given)."""

    explain: bool
    filter: dict[str, FieldCondition]
    token_budget: int
    balance: Literal["none", "subtask"]
    max_similarity: float
    avoid: list[TargetExample]
    avoid_weight: float


def add_steering_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--explain --filter --filter-json --token-budget --balance --max-similarity --avoid
    --avoid-weight` to `parser`, in a group of their own."""
    group = parser.add_argument_group(
        "steering", "rank only some rows, cap tokens, balance subtasks, avoid directions"
    )
    group.add_argument(
        "--explain",
        action="store_true",
        default=None,
        help="write each row's explanation: score per checkpoint and subtask, closest target, "
        "metadata",
    )
    conditions = group.add_mutually_exclusive_group()
    conditions.add_argument(
        "--filter",
        dest="filter_exprs",
        action=_FilterAction,
        metavar="EXPR",
        help="keep rows whose metadata match (repeatable, all must hold): FIELD=V, "
        "FIELD=V1|V2, FIELD!=V1|V2, FIELD>N, FIELD>=N, FIELD<N, FIELD<=N; values are numbers "
        'and true/false unless "quoted"',
    )
    conditions.add_argument(
        "--filter-json",
        type=_filter_json,
        metavar="JSON",
        help='the whole filter object, e.g. \'{"lang": {"in": ["en", "fr"]}}\'',
    )
    group.add_argument(
        "--token-budget",
        type=_field_type("token_budget", int),
        metavar="N",
        help="take rows best first while their total tokens stay within N",
    )
    group.add_argument(
        "--balance",
        choices=BALANCE_CHOICES,
        help="'subtask': an equal share per target subtask (default: none)",
    )
    group.add_argument(
        "--max-similarity",
        type=_field_type("max_similarity", float),
        metavar="X",
        help="skip a row more similar than X (cosine, in (-1, 1]) to a row already selected",
    )
    group.add_argument(
        "--avoid",
        metavar="FILE",
        help="JSONL of examples (the targets' format) whose gradient direction to avoid",
    )
    group.add_argument(
        "--avoid-weight",
        type=_field_type("avoid_weight", float),
        metavar="X",
        help="weight of the avoid similarity: score = sim(targets) - X * sim(avoid) (default 1)",
    )


def steering_options(args: argparse.Namespace) -> SteeringOptions:
    """The request fields of the steering flags given, from a namespace parsed by a parser
    that `add_steering_arguments` set up.

    Raises:
        InputFileError: The `--avoid` file is malformed (the message names the line).
        OSError: The `--avoid` file cannot be read.
    """
    options: SteeringOptions = {}
    if args.explain:
        options["explain"] = True
    if args.filter_exprs:
        # Already checked by _FilterAction as each expression arrived; this cannot fail.
        options["filter"] = parse_filter_expressions(args.filter_exprs)
    elif args.filter_json is not None:
        options["filter"] = args.filter_json
    if args.token_budget is not None:
        options["token_budget"] = args.token_budget
    if args.balance is not None:
        options["balance"] = args.balance
    if args.max_similarity is not None:
        options["max_similarity"] = args.max_similarity
    if args.avoid is not None:
        options["avoid"] = load_targets_jsonl(args.avoid)
    if args.avoid_weight is not None:
        options["avoid_weight"] = args.avoid_weight
    return options


class _FilterAction(argparse.Action):
    """Appends a `--filter` expression, checking it together with the earlier ones.

    Checking at parse time makes a malformed or contradictory expression an ordinary usage
    error (argparse's one line and exit status 2) before anything is read or sent.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        exprs = [*(getattr(namespace, self.dest, None) or []), str(values)]
        try:
            parse_filter_expressions(exprs)
        except FilterExpressionError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        setattr(namespace, self.dest, exprs)


def _filter_json(text: str) -> dict[str, FieldCondition]:
    try:
        return parse_filter_json(text)
    except FilterExpressionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _field_type(name: str, parse: Callable[[str], NumberT]) -> Callable[[str], NumberT]:
    """An argparse type: a number checked against the bounds of `SelectRequest.<name>`."""
    # The field's own annotation and constraints (ge, le, strict, finite), nothing restated.
    adapter: TypeAdapter[NumberT | None] = TypeAdapter(
        SelectRequest.model_fields[name].rebuild_annotation()
    )

    def convert(text: str) -> NumberT:
        try:
            number = parse(text)
        except ValueError:
            kind = "an integer" if parse is int else "a number"
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        try:
            adapter.validate_python(number)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(describe_validation_errors(exc.errors())) from None
        return number

    convert.__name__ = parse.__name__  # argparse names the type in "invalid int value" errors
    return convert
