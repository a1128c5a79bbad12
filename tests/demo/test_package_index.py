"""Which package index the BIG-bench fetch uses, and reading a simple-API page (no network)."""

from __future__ import annotations

import io
import json
import subprocess
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from demo.sources import fetch, package_index
from demo.sources._common import SourceError

MIRROR = "https://mirror.example.invalid/simple"
OTHER = "https://other.example.invalid/pypi/simple"


def _no_pip_config() -> dict[str, str]:
    raise AssertionError("pip's configuration must not be read when $PIP_INDEX_URL is set")


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(package_index.INDEX_URL_ENV, raising=False)
    return monkeypatch


def test_env_var_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(package_index.INDEX_URL_ENV, MIRROR + "/")
    monkeypatch.setattr(package_index, "pip_config_items", _no_pip_config)
    assert package_index.default_index_url() == MIRROR


def test_pip_config_next_download_section_over_global(no_env: pytest.MonkeyPatch) -> None:
    config = {"global.index-url": OTHER, "download.index-url": MIRROR}
    no_env.setattr(package_index, "pip_config_items", lambda: config)
    assert package_index.default_index_url() == MIRROR
    del config["download.index-url"]
    assert package_index.default_index_url() == OTHER


def test_empty_env_var_falls_through(no_env: pytest.MonkeyPatch) -> None:
    no_env.setenv(package_index.INDEX_URL_ENV, "  ")
    no_env.setattr(package_index, "pip_config_items", lambda: {"global.index-url": MIRROR})
    assert package_index.default_index_url() == MIRROR


def test_pip_builtin_default_last(no_env: pytest.MonkeyPatch) -> None:
    from pip._internal.models.index import PyPI

    # Unrelated settings (extra-index-url, find-links) do not count as the index.
    no_env.setattr(package_index, "pip_config_items", lambda: {"global.extra-index-url": MIRROR})
    assert package_index.default_index_url() == PyPI.simple_url.rstrip("/")


def test_no_index_at_all_is_a_clear_error(no_env: pytest.MonkeyPatch) -> None:
    no_env.setattr(package_index, "pip_config_items", dict)
    no_env.setattr(package_index, "pip_builtin_index_url", lambda: None)
    with pytest.raises(SourceError, match="--index-url"):
        package_index.default_index_url()


def test_parse_pip_config_list() -> None:
    text = (
        f"global.index-url='{MIRROR}'\n"
        "global.extra-index-url='file:///a/simple file:///b/simple'\n"
        ":env:.default-timeout='180'\n"
        "not a setting\n"
    )
    assert package_index.parse_pip_config_list(text) == {
        "global.index-url": MIRROR,
        "global.extra-index-url": "file:///a/simple file:///b/simple",
        ":env:.default-timeout": "180",
    }


def test_pip_config_items_runs_pip_and_survives_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout=f"global.index-url='{MIRROR}'\n")

    monkeypatch.setattr(package_index.subprocess, "run", fake_run)
    assert package_index.pip_config_items() == {"global.index-url": MIRROR}
    assert calls[0][1:] == ["-m", "pip", "config", "list"]

    def failing(cmd: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="broken")

    monkeypatch.setattr(package_index.subprocess, "run", failing)
    assert package_index.pip_config_items() == {}

    def missing(cmd: list[str], **_kwargs: object) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(package_index.subprocess, "run", missing)
    assert package_index.pip_config_items() == {}


def test_fetch_without_index_url_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[str] = []

    def fake_resolve(index_url: str, project: str, filename: str) -> tuple[str, str | None]:
        seen.append(index_url)
        raise SourceError("stop before any download")

    monkeypatch.setattr(fetch, "default_index_url", lambda: MIRROR)
    monkeypatch.setattr(fetch, "resolve_on_index", fake_resolve)
    with pytest.raises(SourceError, match="stop"):
        fetch.fetch_bigbench_sdist(tmp_path)
    with pytest.raises(SourceError, match="stop"):
        fetch.fetch_bigbench_sdist(tmp_path, index_url=OTHER)  # --index-url still wins
    assert seen == [MIRROR, OTHER]
    assert not list(tmp_path.glob("*.part"))


class _Response(io.BytesIO):
    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__(body)
        self.headers = Message()
        self.headers["Content-Type"] = content_type


def _serve(monkeypatch: pytest.MonkeyPatch, body: bytes, content_type: str) -> list[str]:
    pages: list[str] = []

    def fake_urlopen(req: urllib.request.Request, timeout: float) -> _Response:
        pages.append(req.full_url)
        return _Response(body, content_type)

    monkeypatch.setattr(package_index.urllib.request, "urlopen", fake_urlopen)
    return pages


def test_resolve_on_json_index(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {
        "files": [
            {"filename": "p-0.9.tar.gz", "url": "../../f/p-0.9.tar.gz", "hashes": {}},
            {"filename": "p-1.0.tar.gz", "url": "../../f/p-1.0.tar.gz", "hashes": {"sha256": "ab"}},
        ]
    }
    pages = _serve(monkeypatch, json.dumps(doc).encode(), "application/vnd.pypi.simple.v1+json")
    url, sha = package_index.resolve_on_index(MIRROR + "/", "p", "p-1.0.tar.gz")
    assert pages == [MIRROR + "/p/"]
    assert (url, sha) == ("https://mirror.example.invalid/f/p-1.0.tar.gz", "ab")


def test_resolve_on_html_index(monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'<html><a href="/f/p-1.0.tar.gz#sha256=cd">p-1.0.tar.gz</a><a>no href</a></html>'
    _serve(monkeypatch, body, "text/html")
    url, sha = package_index.resolve_on_index(MIRROR, "p", "p-1.0.tar.gz")
    assert (url, sha) == ("https://mirror.example.invalid/f/p-1.0.tar.gz", "cd")
    with pytest.raises(SourceError, match="not listed"):
        package_index.resolve_on_index(MIRROR, "p", "p-2.0.tar.gz")
