"""Filter expressions and the shared steering flags (less_wire.filters, less_wire.cli_options)."""

from __future__ import annotations

import argparse
import json

import pytest

from less_wire import (
    FieldCondition,
    FilterExpressionError,
    InputFileError,
    SelectRequest,
    add_steering_arguments,
    parse_filter_expressions,
    parse_filter_json,
    steering_options,
)


def wire(conditions: dict[str, FieldCondition]) -> dict[str, dict]:
    """The filter object as it goes over the wire."""
    return {name: c.model_dump(exclude_none=True) for name, c in conditions.items()}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("lang=en", {"lang": {"eq": "en"}}),
        ("n_turns=3", {"n_turns": {"eq": 3}}),
        ("ratio=0.5", {"ratio": {"eq": 0.5}}),
        ("big=1e3", {"big": {"eq": 1000.0}}),
        ("verified=true", {"verified": {"eq": True}}),
        ("verified=false", {"verified": {"eq": False}}),
        ('code="3"', {"code": {"eq": "3"}}),
        ('flag="true"', {"flag": {"eq": "true"}}),
        ("x=null", {"x": {"eq": "null"}}),  # not a number or bool: text
        ("x=007", {"x": {"eq": "007"}}),  # not JSON number syntax: text
        ("x=NaN", {"x": {"eq": "NaN"}}),
        ('empty=""', {"empty": {"eq": ""}}),
        (" lang = en ", {"lang": {"eq": "en"}}),
        ("source=flan|cot|3", {"source": {"in": ["flan", "cot", 3]}}),
        ('source="a|b"|c', {"source": {"in": ["a|b", "c"]}}),
        ('source="a|b"', {"source": {"eq": "a|b"}}),
        ('q="say \\"hi\\""', {"q": {"eq": 'say "hi"'}}),
        ("source!=sharegpt", {"source": {"not_in": ["sharegpt"]}}),
        ("source!=a|b", {"source": {"not_in": ["a", "b"]}}),
        ("n>=32", {"n": {"gte": 32}}),
        ("n>32", {"n": {"gt": 32}}),
        ("n<=2048", {"n": {"lte": 2048}}),
        ("n<-1.5", {"n": {"lt": -1.5}}),
        ("url=http://a?b=c", {"url": {"eq": "http://a?b=c"}}),  # the first operator splits
        ("a.b=c", {"a.b": {"eq": "c"}}),
    ],
)
def test_one_expression(expr, expected):
    assert wire(parse_filter_expressions([expr])) == expected


def test_values_keep_their_json_types():
    (condition,) = parse_filter_expressions(["x=1|1.5|true|one"]).values()
    assert condition.in_ == [1, 1.5, True, "one"]
    assert [type(v) for v in condition.in_] == [int, float, bool, str]


def test_expressions_on_one_field_merge():
    conditions = parse_filter_expressions(
        ["n>=3", "lang=en", "n<10", "src!=a", "src!=b|a", "lang=en", "n=5|6"]
    )
    assert wire(conditions) == {
        "n": {"gte": 3, "lt": 10, "in": [5, 6]},
        "lang": {"eq": "en"},
        "src": {"not_in": ["a", "b"]},
    }
    assert list(conditions) == ["n", "lang", "src"]  # order of first mention


def test_the_wire_name_of_in():
    request = SelectRequest(
        targets=[{"prompt": "p", "completion": "c"}],
        filter=parse_filter_expressions(["source=a|b"]),
    )
    body = json.loads(request.model_dump_json(exclude_none=True))
    assert body["filter"] == {"source": {"in": ["a", "b"]}}


@pytest.mark.parametrize(
    ("exprs", "message"),
    [
        (["lang"], "bad filter 'lang': expected FIELD=VALUE"),
        (["=en"], "bad filter '=en': no field name before '='"),
        (["  >3"], "no field name before '>'"),
        (["lang==en"], "bad filter 'lang==en': use one '='"),
        (["lang="], "empty value"),
        (["lang=en|"], "empty value"),
        (["lang=|en"], "empty value"),
        (['lang="en'], "unterminated or invalid quoted value"),
        (['lang="en"x'], "expected '|' or the end after a quoted value"),
        (["n>big"], "bad filter 'n>big': '>' needs one number"),
        (["n>=true"], "'>=' needs one number"),
        (['n<"3"'], "'<' needs one number"),
        (["n<1|2"], "'<' needs one number"),
        (["n>1e999"], "1e999 is out of range"),
        (["lang=en", "lang=fr"], "filter 'lang=fr' contradicts 'lang=en' on field 'lang'"),
        (["x=1", "x=true"], "contradicts"),  # 1 and true are different values
        (["x=a|b", "x=c", "x=d"], "filter 'x=d' contradicts 'x=c'"),
        (["n>1", "n>2"], "filter 'n>2' contradicts 'n>1'"),
        (["x=" + "|".join(str(i) for i in range(1025))], "at most 1024 items"),
    ],
)
def test_bad_expressions(exprs, message):
    with pytest.raises(FilterExpressionError, match=None) as info:
        parse_filter_expressions(exprs)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert isinstance(info.value, ValueError)


def test_a_long_expression_is_shortened_in_the_message():
    expr = "x=" + "|".join(str(i) for i in range(2000))
    with pytest.raises(ValueError) as info:
        parse_filter_expressions([expr])
    assert len(str(info.value)) < 200


def test_no_expressions_no_filter():
    assert parse_filter_expressions([]) == {}


def test_filter_json():
    conditions = parse_filter_json('{"lang": {"in": ["en", "fr"]}, "n": {"gte": 3, "lt": 10}}')
    assert wire(conditions) == {"lang": {"in": ["en", "fr"]}, "n": {"gte": 3, "lt": 10}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{lang: en}", "filter JSON is not valid JSON"),
        ("[1]", "must be an object of FIELD: condition, got list"),
        ('{"lang": {}}', "a condition needs one of"),
        ('{"lang": {"eq": "en", "like": "e%"}}', "lang.like: Extra inputs are not permitted"),
        ('{"n": {"gt": NaN}}', "not valid JSON"),
    ],
)
def test_bad_filter_json(text, message):
    with pytest.raises(FilterExpressionError) as info:
        parse_filter_json(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# The shared flags, through a bare parser (both CLIs call the same two functions).


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tool")
    add_steering_arguments(p)
    return p


def test_no_flags_no_options():
    assert steering_options(parser().parse_args([])) == {}


def test_flags_become_request_fields(tmp_path):
    avoid = tmp_path / "avoid.jsonl"
    avoid.write_text(json.dumps({"prompt": "p", "completion": "bad"}) + "\n", encoding="utf-8")
    args = parser().parse_args(
        [
            "--explain",
            "--filter",
            "lang=en|fr",
            "--filter",
            "n<100",
            "--token-budget",
            "5000",
            "--balance",
            "subtask",
            "--max-similarity",
            "0.9",
            "--avoid",
            str(avoid),
            "--avoid-weight",
            "0.5",
        ]
    )
    options = steering_options(args)
    request = SelectRequest.model_validate(
        {"targets": [{"prompt": "q", "completion": "a"}], **options}
    )
    assert json.loads(request.model_dump_json(exclude_none=True)) == {
        "targets": [{"prompt": "q", "completion": "a"}],
        "aggregate": "max",
        "return_scores": True,
        "explain": True,
        "filter": {"lang": {"in": ["en", "fr"]}, "n": {"lt": 100}},
        "token_budget": 5000,  # alone it sets the size: no default fraction
        "balance": "subtask",
        "max_similarity": 0.9,
        "avoid": [{"prompt": "p", "completion": "bad"}],
        "avoid_weight": 0.5,
    }


def test_filter_json_flag():
    options = steering_options(parser().parse_args(["--filter-json", '{"x": {"eq": 1}}']))
    assert wire(options["filter"]) == {"x": {"eq": 1}}


def test_bad_avoid_file_names_its_line(tmp_path):
    avoid = tmp_path / "avoid.jsonl"
    avoid.write_text('{"prompt": "p", "completion": "c"}\n{"prompt": "p"}\n', encoding="utf-8")
    with pytest.raises(InputFileError, match=f"{avoid}:2: invalid target example"):
        steering_options(parser().parse_args(["--avoid", str(avoid)]))


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--filter", "lang"], "argument --filter: bad filter 'lang'"),
        (["--filter", "a=1", "--filter", "a=2"], "filter 'a=2' contradicts 'a=1'"),
        (["--filter", "a=1", "--filter-json", "{}"], "not allowed with argument --filter"),
        (["--filter-json", "[]"], "argument --filter-json: filter JSON must be an object"),
        (["--token-budget", "0"], "argument --token-budget: Input should be greater than or"),
        (["--token-budget", "1.5"], "argument --token-budget: not an integer: '1.5'"),
        (["--balance", "team"], "argument --balance: invalid choice: 'team'"),
        (["--max-similarity", "1.5"], "argument --max-similarity: Input should be less than"),
        (["--max-similarity", "-1"], "argument --max-similarity: Input should be greater than"),
        (["--max-similarity", "nan"], "finite number"),
        (["--avoid-weight", "x"], "argument --avoid-weight: not a number: 'x'"),
        (["--avoid-weight", "101"], "argument --avoid-weight: Input should be less than"),
    ],
)
def test_bad_flags_are_usage_errors(capsys, argv, complaint):
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err
    assert "Traceback" not in err
