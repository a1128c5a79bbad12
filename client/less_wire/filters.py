"""Metadata filters written on a command line: `FIELD=VALUE` expressions and a JSON object.

One parser for every CLI of the project (`less-select`, `less-index select`), so a filter means
the same thing on both and ends up as the same `SelectRequest.filter` the API takes:

    FIELD=VALUE          eq        lang=en, n_turns=3, verified=true
    FIELD=V1|V2|V3       in        source=flan|cot|"dolly v2"
    FIELD!=V1|V2         not_in    source!=sharegpt
    FIELD>=N  FIELD>N    gte, gt   n_tokens>=32
    FIELD<=N  FIELD<N    lte, lt   n_tokens<2048

A VALUE that is a JSON number or `true`/`false` is that; anything else is a string. A value in
double quotes is always a string (a JSON string: `"3"`, `"a|b"`, `"say \\"hi\\""`). Several
expressions on one field merge into one condition (`n>=3` and `n<10`: both bounds); the same
operator twice on a field with different values is an error, except `!=`, whose lists add up
(`x!=a` and `x!=b` exclude both).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .errors import describe_validation_errors
from .models import FieldCondition

__all__ = ["FilterExpressionError", "parse_filter_expressions", "parse_filter_json"]

Scalar = str | int | float | bool

# Longest first at the same position, so ">=" is not read as ">" followed by a value "=N".
_OPERATORS = ("!=", ">=", "<=", "=", ">", "<")
_BOUNDS = {">=": "gte", ">": "gt", "<=": "lte", "<": "lt"}
_SYNTAX = "expected FIELD=VALUE, FIELD=V1|V2, FIELD!=V1|V2, FIELD>N, FIELD>=N, FIELD<N or FIELD<=N"

_SHOWN_CHARS = 60

_FILTER_ADAPTER: TypeAdapter[dict[str, FieldCondition]] = TypeAdapter(dict[str, FieldCondition])


class FilterExpressionError(ValueError):
    """A filter expression (or `--filter-json` object) is malformed; the message names it."""


def parse_filter_expressions(exprs: Sequence[str]) -> dict[str, FieldCondition]:
    """Parses `FIELD<op>VALUE` expressions into the request's `filter` object.

    Args:
        exprs: The expressions, e.g. `["lang=en", "n_tokens<2048", "source!=a|b"]`.

    Returns:
        One `FieldCondition` per field named, in order of first mention.

    Raises:
        FilterExpressionError: (a `ValueError`) an expression is malformed, contradicts an
            earlier one on the same field, or gives a condition the API would refuse; the
            one-line message quotes the expression.
    """
    conditions: dict[str, dict[str, Any]] = {}
    sources: dict[str, list[str]] = {}
    first: dict[tuple[str, str], str] = {}  # (field, condition) -> the expression that set it
    for expr in exprs:
        field, op, value_text = _split(expr)
        key, value = _condition(expr, op, _values(expr, value_text))
        merged = conditions.setdefault(field, {})
        sources.setdefault(field, []).append(expr)
        if key not in merged:
            merged[key] = value
            first[field, key] = expr
        elif key == "not_in":
            # "not a and not b": the excluded lists add up.
            merged[key] += [v for v in value if not _contains(merged[key], v)]
        elif not _same(merged[key], value):
            raise FilterExpressionError(
                f"filter {_show(expr)} contradicts {_show(first[field, key])} on field {field!r}"
            )
    out: dict[str, FieldCondition] = {}
    for field, condition in conditions.items():
        try:
            out[field] = FieldCondition.model_validate(condition)
        except ValidationError as exc:
            shown = " ".join(_show(s) for s in sources[field])
            raise FilterExpressionError(
                f"filter {shown}: {describe_validation_errors(exc.errors())}"
            ) from None
    return out


def parse_filter_json(text: str) -> dict[str, FieldCondition]:
    """Parses a whole `filter` object given as JSON, e.g. `{"lang": {"in": ["en", "fr"]}}`.

    Raises:
        FilterExpressionError: not JSON, not an object, or not valid conditions (one line).
    """
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise FilterExpressionError(f"filter JSON is not valid JSON: {detail}") from None
    if not isinstance(raw, dict):
        raise FilterExpressionError(
            f"filter JSON must be an object of FIELD: condition, got {type(raw).__name__}"
        )
    try:
        return _FILTER_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise FilterExpressionError(
            f"filter JSON: {describe_validation_errors(exc.errors())}"
        ) from None


def _split(expr: str) -> tuple[str, str, str]:
    """(field, operator, value text) of an expression; the operator is the first one found."""
    found = [(expr.find(op), -len(op), op) for op in _OPERATORS if op in expr]
    if not found:
        raise FilterExpressionError(f"bad filter {_show(expr)}: {_SYNTAX}")
    position, _, op = min(found)
    field, value_text = expr[:position].strip(), expr[position + len(op) :]
    if not field:
        raise FilterExpressionError(f"bad filter {_show(expr)}: no field name before {op!r}")
    if op == "=" and value_text.startswith("="):
        raise FilterExpressionError(f"bad filter {_show(expr)}: use one '=' (FIELD=VALUE)")
    return field, op, value_text


def _values(expr: str, text: str) -> list[Scalar]:
    """The `|`-separated values of an expression; a `|` inside double quotes is not a separator."""
    values: list[Scalar] = []
    decoder = json.JSONDecoder()
    position, size = 0, len(text)
    while True:
        start = position
        while start < size and text[start].isspace():
            start += 1
        if start < size and text[start] == '"':
            try:
                value, end = decoder.raw_decode(text, start)
            except json.JSONDecodeError as exc:
                raise FilterExpressionError(
                    f"bad filter {_show(expr)}: unterminated or invalid quoted value ({exc.msg})"
                ) from None
            values.append(value)
            while end < size and text[end].isspace():
                end += 1
            if end == size:
                return values
            if text[end] != "|":
                raise FilterExpressionError(
                    f"bad filter {_show(expr)}: expected '|' or the end after a quoted value"
                )
            position = end + 1
            continue
        bar = text.find("|", position)
        token = text[position : size if bar < 0 else bar].strip()
        if not token:
            raise FilterExpressionError(
                f'bad filter {_show(expr)}: empty value (write "" for an empty string)'
            )
        values.append(_scalar(expr, token))
        if bar < 0:
            return values
        position = bar + 1


def _scalar(expr: str, token: str) -> Scalar:
    """A JSON number or true/false as such; any other unquoted token is a string."""
    try:
        value = json.loads(token, parse_constant=_no_constant)
    except ValueError:
        return token
    if isinstance(value, float) and not math.isfinite(value):
        # 1e999 is JSON syntax for a number no request may carry (it would be sent as null).
        raise FilterExpressionError(f"bad filter {_show(expr)}: {token} is out of range")
    if isinstance(value, bool | int | float):
        return value
    return token  # null, [..], {..}: text like any other


def _no_constant(name: str) -> Any:
    # json.loads takes NaN and Infinity, which no condition may hold: they stay text.
    raise ValueError(f"{name} is not a number here")


def _condition(expr: str, op: str, values: list[Scalar]) -> tuple[str, Any]:
    """The condition key (its wire name) and value an operator and its values stand for."""
    if op in _BOUNDS:
        if len(values) != 1 or not _is_number(values[0]):
            raise FilterExpressionError(f"bad filter {_show(expr)}: {op!r} needs one number")
        return _BOUNDS[op], values[0]
    if op == "!=":
        return "not_in", values
    if len(values) == 1:
        return "eq", values[0]
    return "in", values


def _show(expr: str) -> str:
    """An expression quoted for a one-line message, shortened when long (a list of 1000 values)."""
    if len(expr) > _SHOWN_CHARS:
        expr = expr[: _SHOWN_CHARS - 3] + "..."
    return repr(expr)


def _is_number(value: Scalar) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _same(a: Any, b: Any) -> bool:
    """Equal as filter values: `1` is not `true` and `"1"` is not `1`."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _contains(values: list[Scalar], value: Scalar) -> bool:
    return any(_same(v, value) for v in values)
