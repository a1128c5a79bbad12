"""The package index pip would use, and files looked up on its simple API (PEP 691 / PEP 503).

No index host is written here: the default is whatever pip itself is configured with, so a
machine behind a mirror fetches from the mirror, and a bare machine gets pip's own default.
"""

from __future__ import annotations

import ast
import html.parser
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import PurePosixPath

from demo.sources._common import SourceError

logger = logging.getLogger(__name__)

INDEX_URL_ENV = "PIP_INDEX_URL"
#: ``pip config list`` keys that set the index, most specific first: the ``download`` command's
#: own section overrides ``global`` in pip, and fetching an sdist is a download.
PIP_CONFIG_KEYS = ("download.index-url", "global.index-url")
PIP_CONFIG_TIMEOUT_S = 30.0


def default_index_url() -> str:
    """The simple-API index pip would download from.

    In order: ``$PIP_INDEX_URL``; the ``index-url`` in pip's configuration files (as
    ``python -m pip config list`` reports it); pip's built-in default, read from pip itself.

    Returns:
        The index URL, without a trailing slash.

    Raises:
        SourceError: None of the three gives a URL (no env var, no config, pip not importable).
    """
    env = os.environ.get(INDEX_URL_ENV, "").strip()
    if env:
        logger.debug("index url from $%s", INDEX_URL_ENV)
        return env.rstrip("/")
    config = pip_config_items()
    for key in PIP_CONFIG_KEYS:
        value = config.get(key, "").strip()
        if value:
            logger.debug("index url from pip config %s", key)
            return value.rstrip("/")
    builtin = pip_builtin_index_url()
    if builtin:
        logger.debug("index url: pip's built-in default")
        return builtin.rstrip("/")
    raise SourceError(
        f"cannot tell which package index to use: set ${INDEX_URL_ENV}, configure pip's "
        f"index-url, or pass --index-url"
    )


def pip_config_items() -> dict[str, str]:
    """pip's configuration as ``python -m pip config list`` prints it (``section.key`` → value).

    A subprocess, not pip's internal API, because ``pip config list`` is pip's public,
    stable interface to its merged configuration files.

    Returns:
        The settings; empty if pip cannot be run or fails.
    """
    cmd = [sys.executable, "-m", "pip", "config", "list"]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=PIP_CONFIG_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.debug("`%s` failed: %s", " ".join(cmd), exc)
        return {}
    if done.returncode != 0:
        logger.debug("`%s` exited %d: %s", " ".join(cmd), done.returncode, done.stderr.strip())
        return {}
    return parse_pip_config_list(done.stdout)


def parse_pip_config_list(text: str) -> dict[str, str]:
    """Parse ``pip config list`` output: one ``section.key='value'`` per line (value repr'd).

    Args:
        text: The command's stdout.

    Returns:
        ``section.key`` → value; lines that do not parse are ignored.
    """
    items: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.partition("=")
        if not sep or not key.strip():
            continue
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        items[key.strip()] = str(value)
    return items


def pip_builtin_index_url() -> str | None:
    """pip's built-in default index (its ``PyPI.simple_url``), or None without pip.

    Imported lazily and only here: it is pip's internal module, used just for this one value.
    """
    try:
        from pip._internal.models.index import PyPI
    except ImportError:
        logger.debug("pip is not importable; no built-in index url")
        return None
    return str(PyPI.simple_url)


class NotListedError(SourceError):
    """The index answered, and does not have the file (or the project) asked for."""


class _LinkParser(html.parser.HTMLParser):
    """Collects every ``<a href>`` of a PEP 503 project page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def resolve_on_index(index_url: str, project: str, filename: str) -> tuple[str, str | None]:
    """Find ``filename`` of ``project`` on a PEP 691 (JSON) or PEP 503 (HTML) simple index.

    Args:
        index_url: The simple-API root, e.g. what :func:`default_index_url` returns.
        project: The normalized project name.
        filename: The exact distribution file name.

    Returns:
        The absolute download URL and the index's sha256 for it (``None`` if it gives none).

    Raises:
        NotListedError: The index answered but lists no ``filename`` (a 404 for the project
            page counts: the index has no such project).
        SourceError: The project page cannot be read (network, server error, bad page).
    """
    page = index_url.rstrip("/") + f"/{project}/"
    req = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotListedError(f"{filename} is not listed on {page} (no such project)") from exc
        raise SourceError(f"cannot read package index page {page}: {exc}") from exc
    except OSError as exc:
        raise SourceError(f"cannot read package index page {page}: {exc}") from exc
    if "json" in ctype:
        try:
            files = json.loads(body).get("files", [])
        except (ValueError, AttributeError) as exc:
            raise SourceError(f"package index page {page} is not PEP 691 JSON: {exc}") from exc
        for entry in files:
            if entry.get("filename") == filename:
                url = urllib.parse.urljoin(page, entry["url"])
                return url, entry.get("hashes", {}).get("sha256")
    else:
        parser = _LinkParser()
        parser.feed(body.decode("utf-8", "replace"))
        for href in parser.hrefs:
            url = urllib.parse.urljoin(page, href)
            parsed = urllib.parse.urlsplit(url)
            if PurePosixPath(parsed.path).name == filename:
                frag = urllib.parse.parse_qs(parsed.fragment)
                return url.split("#", 1)[0], (frag.get("sha256") or [None])[0]
    raise NotListedError(f"{filename} is not listed on {page}")
