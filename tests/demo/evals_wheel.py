"""A small hand-made stand-in for the ``evals`` wheel: registry data in every shape the
conversion has to cope with, plus the registry YAML that describes some of it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

DATA = "evals/registry/data"
#: Bytes of the damaged member, found in the finished archive and overwritten.
BROKEN_MARK = b"BROKEN-MEMBER-CONTENT"
#: Lines of the huge file (the test lowers the cap below this).
HUGE_LINES = 120
SYSTEM = "Answer the weekday question."


def _jsonl(records: list[Any]) -> str:
    return "".join(
        (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records
    )


def chat_records(n: int) -> list[Any]:
    """System + user chat inputs with string ideals; then three bad lines."""
    records: list[Any] = [
        {
            "input": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"What day follows day {i}?"},
            ],
            "ideal": f"day {i + 1}",
        }
        for i in range(n)
    ]
    records += [
        "{not json",  # malformed line
        {"ideal": "no input at all"},
        {"input": "a question with no ideal"},
    ]
    return records


def make_evals_wheel(path: Path, *, huge_lines: int = HUGE_LINES) -> Path:
    """Write the fake wheel at ``path`` and return it.

    Tasks: ``chatty`` (chat inputs, 70 usable, 3 bad lines), ``plain`` (string inputs, list
    ideals), ``multi`` (three files: two become subtasks, a few-shot file with no usable
    record is dropped), ``fewshot`` (few-shot chat turns), ``spanish-words`` (ASCII, but its
    name says Spanish), ``lingo`` (its YAML description says French), ``accents`` (mostly
    non-ASCII letters), ``cr_only`` (lines ended by a lone CR), ``huge`` (``huge_lines``
    lines, one of them very long), ``broken`` (a damaged member), ``nothing`` (no usable
    record).
    """
    files: dict[str, str] = {
        f"{DATA}/chatty/samples.jsonl": _jsonl(chat_records(70)),
        f"{DATA}/chatty/README.md": "not data\n",
        f"{DATA}/plain/samples.jsonl": _jsonl(
            [
                {"input": f"Name a colour, number {i}.", "ideal": ["", f"red {i}", "blue"]}
                for i in range(50)
            ]
            + [{"input": "Count to three.", "ideal": 3}]
        ),
        f"{DATA}/multi/a.jsonl": _jsonl(
            [{"input": f"multi a {i}", "ideal": f"A{i}"} for i in range(20)]
        ),
        f"{DATA}/multi/nested/b.jsonl": _jsonl(
            [{"input": f"multi b {i}", "ideal": f"B{i}"} for i in range(20)]
        ),
        f"{DATA}/multi/few_shot.jsonl": _jsonl(
            [{"sample": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
        ),
        f"{DATA}/fewshot/samples.jsonl": _jsonl(
            [
                {
                    "input": [
                        {"role": "system", "content": "Reverse the word."},
                        {"role": "system", "content": "abc", "name": "example_user"},
                        {"role": "system", "content": "cba", "name": "example_assistant"},
                        {"role": "user", "content": f"word{i}"},
                    ],
                    "ideal": f"{i}drow",
                }
                for i in range(30)
            ]
        ),
        f"{DATA}/spanish-words/samples.jsonl": _jsonl(
            [{"input": f"Is casa{i} a word?", "ideal": "Yes"} for i in range(50)]
        ),
        f"{DATA}/lingo/samples.jsonl": _jsonl(
            [{"input": f"Is maison{i} a word?", "ideal": "Oui"} for i in range(50)]
        ),
        f"{DATA}/accents/samples.jsonl": _jsonl(
            [{"input": f"Ésta é ñandú çà {i} ü ö ß", "ideal": "ñ"} for i in range(50)]
        ),
        f"{DATA}/cr_only/samples.jsonl": "\r".join(
            json.dumps({"input": f"carriage {i}", "ideal": f"return {i}"}) for i in range(30)
        )
        + "\r",
        f"{DATA}/huge/samples.jsonl": _jsonl(
            [
                {"input": "x" * 5000 if i == 3 else f"huge question {i}", "ideal": f"h{i}"}
                for i in range(huge_lines)
            ]
        ),
        f"{DATA}/broken/samples.jsonl": _jsonl(
            [{"input": BROKEN_MARK.decode(), "ideal": "never read back"}]
        ),
        f"{DATA}/nothing/samples.jsonl": _jsonl([{"sample": "no input"}] * 5),
        "evals/registry/evals/chatty.yaml": (
            "chatty:\n  id: chatty.dev.v0\n  description: Days of the week.\n"
            "chatty.dev.v0:\n  class: evals.elsuite.basic.match:Match\n"
            "  args:\n    samples_jsonl: chatty/samples.jsonl\n"
        ),
        "evals/registry/evals/lingo.yaml": (
            "lingo:\n  id: lingo.dev.v0\n  description: Tests existing French words.\n"
            "lingo.dev.v0:\n  class: evals.elsuite.basic.match:Match\n"
            "  args:\n    samples_jsonl: lingo/samples.jsonl\n"
        ),
        "evals/registry/evals/broken.yaml": "broken: [unclosed\n",
        "evals/__init__.py": "raise SystemExit('never imported')\n",
    }
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            # Stored (not deflated), so the damaged member's bytes can be found and changed.
            archive.writestr(name, text, compress_type=zipfile.ZIP_STORED)
    raw = path.read_bytes()
    assert raw.count(BROKEN_MARK) == 1
    path.write_bytes(raw.replace(BROKEN_MARK, b"X" * len(BROKEN_MARK)))  # CRC no longer matches
    return path
