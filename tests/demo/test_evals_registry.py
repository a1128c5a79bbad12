"""The OpenAI evals registry as a second task source: conversion of a hand-made wheel into
BIG-bench task folders, what tasks.py / splits.py make of them, and the pip download (faked)."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from demo.sources import evals_registry
from demo.sources._common import SourceError
from demo.sources.config import BigBenchConfig
from demo.sources.evals_registry import (
    EVALS_TASKS_DIRNAME,
    EVALS_WHEEL,
    fetch_evals_registry,
    input_text,
)
from demo.sources.fetch import TASKS_MARKER
from demo.sources.splits import build_bigbench_splits
from demo.sources.tasks import EXCLUDED_KEYWORDS, describe_tasks, list_task_dirs, load_task
from indexer.fsutil import sha256_file
from less_core.errors import ConfigError, IntegrityError
from tests.demo.evals_wheel import SYSTEM, make_evals_wheel

#: Lowered in these tests so the fake "huge" file (120 lines) is capped.
TEST_MAX_LINES = 100
TEST_MAX_LINE_BYTES = 2000


@pytest.fixture
def small_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evals_registry, "MAX_LINES_PER_FILE", TEST_MAX_LINES)
    monkeypatch.setattr(evals_registry, "MAX_LINE_BYTES", TEST_MAX_LINE_BYTES)
    monkeypatch.setattr(evals_registry, "READ_CHUNK_BYTES", 512)  # lines span chunks


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return make_evals_wheel(tmp_path / EVALS_WHEEL)


@pytest.fixture
def converted(wheel: Path, tmp_path: Path, small_caps: None) -> Path:
    return fetch_evals_registry(tmp_path / "cache", wheel=wheel, expected_sha256=None)


def _marker(tasks_dir: Path) -> dict:
    return json.loads((tasks_dir / TASKS_MARKER).read_text(encoding="utf-8"))


def test_layout_is_bigbench_task_folders(converted: Path, wheel: Path) -> None:
    assert converted.name == EVALS_TASKS_DIRNAME
    names = [p.name for p in list_task_dirs(converted)]
    assert names == [
        "accents",
        "chatty",
        "cr_only",
        "fewshot",
        "huge",
        "lingo",
        "multi",
        "plain",
        "spanish-words",
    ]
    files = sorted(str(p.relative_to(converted)) for p in converted.rglob("*") if p.is_file())
    assert "multi/a/task.json" in files and "multi/nested__b/task.json" in files
    assert not any("few_shot" in f or "README" in f or f.endswith(".py") for f in files)
    doc = json.loads((converted / "chatty" / "task.json").read_text(encoding="utf-8"))
    assert set(doc) >= {"name", "description", "keywords", "examples"}
    assert doc["description"] == "Days of the week." and doc["keywords"] == ["openai-evals"]
    assert doc["examples"][0] == {
        "input": f"{SYSTEM}\n\nWhat day follows day 0?",
        "target": "day 1",
    }
    marker = _marker(converted)
    assert marker["sha256"] == sha256_file(wheel) and marker["sdist"] == EVALS_WHEEL
    assert marker["converter"] == evals_registry.CONVERSION_FORMAT_VERSION
    assert marker["tasks"] == 9
    assert not list(converted.parent.glob(f".{EVALS_TASKS_DIRNAME}.*"))  # no staging leftovers


def test_tasks_py_reads_the_converted_tasks(converted: Path) -> None:
    chatty = load_task(converted / "chatty", max_chars=10_000)
    assert len(chatty.examples) == 70 and chatty.n_malformed == 0
    first = chatty.examples[0]
    assert first.user == f"{SYSTEM}\n\nWhat day follows day 0?" and first.answer == "day 1"
    assert first.id == "bb/chatty/0" and not first.multiple_choice
    plain = load_task(converted / "plain", max_chars=10_000).examples
    assert plain[7].user == "Name a colour, number 7." and plain[7].answer == "red 7"  # list
    assert plain[-1].answer == "3"  # a number ideal
    multi = load_task(converted / "multi", max_chars=10_000)
    assert multi.subtasks == ("a", "nested__b") and len(multi.examples) == 40
    assert multi.examples[20].user == "multi b 0"
    cr = load_task(converted / "cr_only", max_chars=10_000).examples
    assert [e.answer for e in cr[:2]] == ["return 0", "return 1"] and len(cr) == 30


def test_malformed_records_are_counted_and_dropped(converted: Path) -> None:
    dropped = _marker(converted)["dropped_records"]
    # chatty: 1 not JSON, 1 without input, 1 without ideal; multi's few-shot file and
    # "nothing" hold records without input; huge has one over-long line.
    assert dropped["not JSON"] == 1
    assert dropped["no usable ideal"] == 1
    assert dropped["no input"] == 1 + 1 + 5
    assert dropped["line too long"] == 1
    skipped = _marker(converted)["skipped_tasks"]
    assert set(skipped) == {"broken", "nothing"}
    assert "cannot read" in skipped["broken"] and "no usable example" in skipped["nothing"]


def test_huge_file_is_capped_at_its_first_lines(converted: Path) -> None:
    marker = _marker(converted)
    assert marker["capped_files"] == ["huge/samples.jsonl"]
    assert marker["max_lines_per_file"] == TEST_MAX_LINES
    huge = load_task(converted / "huge", max_chars=100_000)
    # 100 lines read, one of them over the line limit: 99 examples, the last is line 99.
    assert len(huge.examples) == TEST_MAX_LINES - 1
    assert huge.examples[-1].user == f"huge question {TEST_MAX_LINES - 1}"


def test_few_shot_chat_keeps_its_turns(converted: Path) -> None:
    example = load_task(converted / "fewshot", max_chars=10_000).examples[0]
    assert example.user == "Reverse the word.\n\nUser: abc\n\nAssistant: cba\n\nUser: word0"
    assert example.answer == "0drow"


def test_input_text_rejects_what_is_not_text() -> None:
    assert input_text("  plain  ") == "plain"
    for bad in ([], [{"role": "user", "content": ["part"]}], {"role": "user"}, "  ", 3):
        with pytest.raises(ValueError):
            input_text(bad)


def test_non_english_tasks_are_marked_and_never_auto_picked(
    converted: Path, tmp_path: Path
) -> None:
    marker = _marker(converted)["not_english"]
    assert set(marker) == {"accents", "lingo", "spanish-words"}
    assert "spanish" in marker["spanish-words"] and "french" in marker["lingo"]
    assert "non-ASCII" in marker["accents"]
    for name in marker:
        doc = json.loads((converted / name / "task.json").read_text(encoding="utf-8"))
        assert EXCLUDED_KEYWORDS & set(doc["keywords"])
    config = BigBenchConfig(
        target_tasks=("chatty",),
        n_pool_tasks=50,
        per_task_pool=10,
        n_targets_per_task=4,
        n_eval_per_task=8,
    )
    infos = {t.name: t for t in describe_tasks(converted, config)}
    assert not infos["lingo"].eligible and "non-English" in infos["lingo"].reason
    summary = build_bigbench_splits(converted, tmp_path / "splits", config)
    assert set(summary.pool_tasks) == {"cr_only", "fewshot", "huge", "multi", "plain"}
    assert summary.n_pool == 10 * 6
    request = json.loads((tmp_path / "splits" / "splits.json").read_text())["request"]
    assert request["source"] == {
        "sdist": EVALS_WHEEL,
        "sha256": _marker(converted)["sha256"],
        "converter": evals_registry.CONVERSION_FORMAT_VERSION,
    }


def test_cached_conversion_is_reused_until_the_format_changes(
    wheel: Path, tmp_path: Path, small_caps: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    tasks = fetch_evals_registry(cache, wheel=wheel, expected_sha256=None)
    before = (tasks / TASKS_MARKER).stat().st_mtime_ns
    missing = tmp_path / "gone.whl"  # a second call must not need the wheel
    assert fetch_evals_registry(cache, wheel=None, expected_sha256=None) == tasks
    assert (tasks / TASKS_MARKER).stat().st_mtime_ns == before
    monkeypatch.setattr(evals_registry, "CONVERSION_FORMAT_VERSION", 99)
    with pytest.raises(ConfigError, match="not a file"):
        fetch_evals_registry(cache, wheel=missing, expected_sha256=None)
    fetch_evals_registry(cache, wheel=wheel, expected_sha256=None)
    assert _marker(tasks)["converter"] == 99


def test_wrong_sha256_publishes_nothing(wheel: Path, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="sha256"):
        fetch_evals_registry(tmp_path / "cache", wheel=wheel)  # the pinned real hash
    assert not (tmp_path / "cache" / EVALS_TASKS_DIRNAME).exists()


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not a zip file", "not a readable wheel"),
        (None, "holds no evals/registry/data"),
    ],
)
def test_unusable_wheels_are_one_line_source_errors(
    tmp_path: Path, content: bytes | None, match: str
) -> None:
    path = tmp_path / EVALS_WHEEL
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evals/__init__.py", "")
    else:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=match) as info:
        fetch_evals_registry(tmp_path / "cache", wheel=path, expected_sha256=None)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache" / EVALS_TASKS_DIRNAME).exists()


def _fake_pip(
    monkeypatch: pytest.MonkeyPatch, wheel: Path | None, returncode: int = 0, stderr: str = ""
) -> list[list[str]]:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        if wheel is not None:
            dest = Path(cmd[cmd.index("--dest") + 1])
            (dest / EVALS_WHEEL).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr=stderr)

    monkeypatch.setattr(evals_registry.subprocess, "run", fake_run)
    return calls


def test_download_goes_through_pip_with_its_own_index(
    wheel: Path, tmp_path: Path, small_caps: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_pip(monkeypatch, wheel)
    cache = tmp_path / "cache"
    tasks = fetch_evals_registry(cache, expected_sha256=sha256_file(wheel))
    assert (tasks / "chatty" / "task.json").is_file()
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert f"evals=={evals_registry.EVALS_VERSION}" in cmd
    assert "--index-url" not in cmd and not any("://" in part for part in cmd)  # pip's config
    assert sorted(p.name for p in cache.iterdir()) == [EVALS_TASKS_DIRNAME]  # wheel not kept
    fetch_evals_registry(
        cache,
        force=True,
        index_url="https://mirror.invalid/simple",
        keep_wheel=True,
        expected_sha256=None,
    )
    assert calls[1][-2:] == ["--index-url", "https://mirror.invalid/simple"]
    assert (cache / EVALS_WHEEL).is_file()


def test_pip_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = (
        "WARNING: Location 'file:///x' is ignored\n"
        "ERROR: Could not find a version that satisfies the requirement evals==3.0.1.post1\n"
        "ERROR: No matching distribution found for evals==3.0.1.post1\n"
    )
    _fake_pip(monkeypatch, None, returncode=1, stderr=stderr)
    with pytest.raises(SourceError) as info:
        fetch_evals_registry(tmp_path / "cache")
    message = str(info.value)
    assert message.endswith("ERROR: No matching distribution found for evals==3.0.1.post1")
    assert "\n" not in message and "pip download --no-deps evals==" in message
    assert not [p for p in (tmp_path / "cache").iterdir()]  # download dir removed


@pytest.mark.slow
def test_real_evals_registry(tmp_path: Path) -> None:
    """pip-download the real wheel (46 MB), convert it and build the default splits."""
    from demo.sources.config import EVALS_DEFAULT_TARGET_TASKS

    tasks = fetch_evals_registry(tmp_path)
    assert len(list_task_dirs(tasks)) > 400
    config = BigBenchConfig(target_tasks=EVALS_DEFAULT_TARGET_TASKS)
    summary = build_bigbench_splits(tasks, tmp_path / "splits", config)
    for task in EVALS_DEFAULT_TARGET_TASKS:
        assert summary.counts[task]["pool"] == config.per_task_pool  # >= 80 usable each
    assert summary.n_pool == (config.n_pool_tasks + len(EVALS_DEFAULT_TARGET_TASKS)) * 40
