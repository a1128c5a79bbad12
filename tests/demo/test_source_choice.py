"""``source: auto | bigbench | openai-evals``: which source auto picks against a faked package
index, what each choice fetches, the CLI's --source, and one-line errors (no network)."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from demo.sources import choice, cli, evals_registry, package_index
from demo.sources._common import SourceError
from demo.sources.config import (
    DEFAULT_TARGET_TASKS_BY_SOURCE,
    EVALS_DEFAULT_TARGET_TASKS,
    SOURCE_BIGBENCH,
    SOURCE_OPENAI_EVALS,
)
from demo.sources.evals_registry import EVALS_TASKS_DIRNAME, EVALS_WHEEL
from demo.sources.fetch import BIGBENCH_SDIST, TASKS_DIRNAME, TASKS_MARKER
from less_core.errors import ConfigError
from tests.demo.evals_wheel import make_evals_wheel

INDEX = "https://mirror.example.invalid/simple"


class _Response(io.BytesIO):
    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.headers = Message()
        self.headers["Content-Type"] = "application/vnd.pypi.simple.v1+json"


def _index(monkeypatch: pytest.MonkeyPatch, *filenames: str) -> list[str]:
    """A PEP 691 index whose bigbench page lists ``filenames``; returns the pages read."""
    pages: list[str] = []

    def fake_urlopen(req: urllib.request.Request, timeout: float) -> _Response:
        pages.append(req.full_url)
        files = [{"filename": f, "url": f"../../f/{f}", "hashes": {}} for f in filenames]
        return _Response(json.dumps({"files": files}).encode())

    monkeypatch.setattr(package_index.urllib.request, "urlopen", fake_urlopen)
    return pages


def _failing_index(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    def fake_urlopen(req: urllib.request.Request, timeout: float) -> _Response:
        raise exc

    monkeypatch.setattr(package_index.urllib.request, "urlopen", fake_urlopen)


def _no_index(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_urlopen(req: urllib.request.Request, timeout: float) -> _Response:
        raise AssertionError(f"the index must not be asked: {req.full_url}")

    monkeypatch.setattr(package_index.urllib.request, "urlopen", fake_urlopen)


@pytest.fixture(autouse=True)
def default_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto asks the index pip is configured with; here, the fake one."""
    monkeypatch.setattr(choice, "default_index_url", lambda: INDEX)


def test_auto_takes_bigbench_when_the_index_lists_1_0_0(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pages = _index(monkeypatch, "bigbench-0.0.1.tar.gz", BIGBENCH_SDIST)
    name, reason = choice.choose_source("auto", tmp_path)
    assert name == SOURCE_BIGBENCH and "is listed on" in reason
    assert pages == [f"{INDEX}/bigbench/"]


def test_auto_takes_openai_evals_when_only_0_0_1_is_listed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _index(monkeypatch, "bigbench-0.0.1.tar.gz", "bigbench-0.0.1-py3-none-any.whl")
    name, reason = choice.choose_source("auto", tmp_path)
    assert name == SOURCE_OPENAI_EVALS
    assert f"{BIGBENCH_SDIST} is not listed on {INDEX}/bigbench/" in reason


def test_auto_takes_openai_evals_when_the_project_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    page = f"{INDEX}/bigbench/"
    _failing_index(monkeypatch, urllib.error.HTTPError(page, 404, "Not Found", Message(), None))
    name, reason = choice.choose_source("auto", tmp_path)
    assert name == SOURCE_OPENAI_EVALS and "no such project" in reason


def test_auto_with_an_unreachable_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _failing_index(monkeypatch, urllib.error.URLError("connection refused"))
    with pytest.raises(SourceError, match="--source bigbench or --source openai-evals") as info:
        choice.choose_source("auto", tmp_path)
    assert "\n" not in str(info.value)
    # A 500 is not "not listed" either.
    _failing_index(monkeypatch, urllib.error.HTTPError(INDEX, 503, "busy", Message(), None))
    with pytest.raises(SourceError, match="cannot tell"):
        choice.choose_source("auto", tmp_path)
    # ... but a converted evals registry in the cache is used.
    converted = tmp_path / EVALS_TASKS_DIRNAME
    converted.mkdir()
    marker = {"converter": evals_registry.CONVERSION_FORMAT_VERSION}
    (converted / TASKS_MARKER).write_text(json.dumps(marker))
    name, reason = choice.choose_source("auto", tmp_path)
    assert name == SOURCE_OPENAI_EVALS and "cached" in reason


def test_auto_prefers_cached_bigbench_without_asking(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_index(monkeypatch)
    (tmp_path / TASKS_DIRNAME).mkdir()
    (tmp_path / TASKS_DIRNAME / TASKS_MARKER).write_text("{}")
    assert choice.choose_source("auto", tmp_path)[0] == SOURCE_BIGBENCH
    other = tmp_path / "other"
    other.mkdir()
    (other / BIGBENCH_SDIST).write_bytes(b"kept tarball")
    assert choice.choose_source("auto", other)[0] == SOURCE_BIGBENCH


def test_named_sources_skip_the_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_index(monkeypatch)
    for name in (SOURCE_BIGBENCH, SOURCE_OPENAI_EVALS):
        assert choice.choose_source(name, tmp_path) == (name, f"--source {name} was asked for")
    with pytest.raises(ConfigError, match="source must be one of"):
        choice.choose_source("huggingface", tmp_path)


@pytest.fixture
def local_evals_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A generated evals wheel, no index, and the fetch without the real wheel's sha256 pin."""
    _no_index(monkeypatch)
    wheel = make_evals_wheel(tmp_path / EVALS_WHEEL)
    monkeypatch.setattr(
        choice,
        "fetch_evals_registry",
        lambda cache, **kw: evals_registry.fetch_evals_registry(cache, **kw, expected_sha256=None),
    )
    return wheel


def test_prepare_openai_evals_from_a_local_wheel(local_evals_wheel: Path, tmp_path: Path) -> None:
    wheel = local_evals_wheel
    source = choice.prepare_task_source("auto", tmp_path / "cache", wheel=wheel)
    assert source.name == SOURCE_OPENAI_EVALS and "local evals wheel" in source.reason
    assert source.tasks_dir == tmp_path / "cache" / EVALS_TASKS_DIRNAME
    assert (source.tasks_dir / "chatty" / "task.json").is_file()
    assert source.default_target_tasks == EVALS_DEFAULT_TARGET_TASKS
    assert "OpenAI evals" in source.title


@pytest.mark.parametrize(
    "requested, files, match",
    [
        ("auto", ("sdist", "wheel"), "not both"),
        (SOURCE_BIGBENCH, ("wheel",), "source is bigbench"),
        (SOURCE_OPENAI_EVALS, ("sdist",), "source is openai-evals"),
    ],
)
def test_local_files_of_the_other_source_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, requested: str, files: tuple, match: str
) -> None:
    _no_index(monkeypatch)
    kwargs = {f: tmp_path / f for f in files}
    with pytest.raises(ConfigError, match=match):
        choice.prepare_task_source(requested, tmp_path, **kwargs)


def test_each_source_has_default_targets() -> None:
    assert set(DEFAULT_TARGET_TASKS_BY_SOURCE) == {SOURCE_BIGBENCH, SOURCE_OPENAI_EVALS}
    assert len(EVALS_DEFAULT_TARGET_TASKS) >= 6
    assert not set(EVALS_DEFAULT_TARGET_TASKS) & set(DEFAULT_TARGET_TASKS_BY_SOURCE["bigbench"])


def test_cli_source_openai_evals_uses_its_default_targets(
    local_evals_wheel: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wheel = local_evals_wheel
    monkeypatch.setitem(DEFAULT_TARGET_TASKS_BY_SOURCE, SOURCE_OPENAI_EVALS, ("chatty", "plain"))
    out = tmp_path / "out"
    common = ["--cache-dir", str(tmp_path / "cache"), "-q"]
    sizes = ["--n-pool-tasks", "2", "--per-task-pool", "5", "--n-eval-per-task", "8"]
    args = common + ["--source", "openai-evals", "--wheel", str(wheel), "--out", str(out), *sizes]
    assert cli.main(args + ["--n-targets-per-task", "4"]) == 0
    printed = capsys.readouterr().out
    assert "OpenAI evals" in printed and "targets chatty, plain" in printed
    assert sorted(p.name for p in (out / "targets").iterdir()) == ["chatty.jsonl", "plain.jsonl"]
    # Cached now: --list-tasks needs neither the wheel nor the index.
    assert cli.main(common + ["--source", "openai-evals", "--list-tasks"]) == 0
    listing = capsys.readouterr().out
    assert "spanish-words" in listing and "non-English" in listing


def test_cli_auto_without_an_index_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _failing_index(monkeypatch, urllib.error.URLError("no route to host"))
    assert cli.main(["--cache-dir", str(tmp_path), "--list-tasks"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: source auto cannot tell") and err.count("\n") == 1
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exited:  # argparse rejects an unknown source
        cli.main(["--cache-dir", str(tmp_path), "--source", "nope"])
    assert exited.value.code == 2
