"""The web page and the offline docs, in process: served without a key, right content types,
nothing loaded from another host, and the API behind them still locked.

No datastore needs to load for any of this, so the app here points at a missing one (it
fails to open; the page and the docs do not care) instead of building the tiny model.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.routes import ui
from service.settings import ServiceSettings, hash_key

KEY = "ui-test-key"
STATIC = Path(ui.__file__).resolve().parents[1] / "ui" / "static"
# The one absolute URL the page's files may hold: the SVG namespace name (an identifier the
# browser never fetches).
NAMESPACES = {"http://www.w3.org/2000/svg"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    missing = tmp_path_factory.mktemp("no-datastore") / "missing"
    settings = ServiceSettings(
        datastores={"tiny": {"path": str(missing), "model_dir": str(missing)}},
        teams={"alpha": {"key_sha256": [hash_key(KEY)], "datastores": ["tiny"]}},
        jobs_dir=str(tmp_path_factory.mktemp("ui-jobs")),
        device="cpu",
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


class _Refs(HTMLParser):
    """Every URL an HTML page loads or links to (src, href), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def refs(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    return parser.urls


def absolute_urls(text: str) -> set[str]:
    """URLs naming a host: http(s)://host... or protocol-relative //host.tld... ."""
    pattern = r"""(?:https?://[^\s"'`)<>]+|(?<![:\w])//[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"""
    return set(re.findall(pattern, text)) - NAMESPACES


def test_ui_page_needs_no_key_and_is_locked_down(client):
    page = client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    # A trailing slash lands on the page too (relative asset URLs assume /ui).
    assert client.get("/ui/", follow_redirects=False).headers["location"].endswith("/ui")


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("charts.js", "text/javascript; charset=utf-8"),
        ("jsonl.js", "text/javascript; charset=utf-8"),
        ("plan.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
    ],
)
def test_static_assets_with_their_content_types(client, name, media_type):
    answer = client.get(f"/ui/static/{name}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == media_type
    assert answer.content == (STATIC / name).read_bytes()


def test_everything_the_page_loads_is_served_here(client):
    html = client.get("/ui").text
    loaded = refs(html)
    assert "ui/static/app.js" in loaded and "ui/static/app.css" in loaded
    for url in loaded:
        assert not absolute_urls(url), url
        assert client.get("/" + url.lstrip("/")).status_code == 200, url
    # The JS modules import each other by relative path only; each import is served.
    for script in STATIC.glob("*.js"):
        text = script.read_text()
        assert not absolute_urls(text), (script.name, absolute_urls(text))
        for module in re.findall(r"""from\s+"\./([\w.-]+)";""", text):
            assert client.get(f"/ui/static/{module}").status_code == 200, (script.name, module)
    assert not absolute_urls((STATIC / "app.css").read_text())
    assert not absolute_urls(html)


@pytest.mark.parametrize(
    "path", ["/ui/static/missing.js", "/ui/static/..%2F..%2Froutes%2Fui.py", "/ui/static/.hidden"]
)
def test_only_the_listed_files_are_served(client, path):
    answer = client.get(path)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_reference_no_other_host(client, path):
    page = client.get(path)
    assert page.status_code == 200
    assert not absolute_urls(page.text), absolute_urls(page.text)
    # And what the bundles would fetch by themselves stays on this origin too.
    policy = page.headers["content-security-policy"]
    for directive in ("default-src 'self'", "connect-src 'self'", "img-src 'self' data: blob:"):
        assert directive in policy, directive
    assert "http" not in policy
    loaded = refs(page.text)
    assert loaded, "the docs page loads its assets by URL"
    for url in loaded:
        assert url.startswith("/docs/assets/"), url
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
    # Swagger UI's schema URL and no outside validator.
    if path == "/docs":
        assert "url: '/openapi.json'" in page.text
        assert '"validatorUrl": null' in page.text


def test_docs_assets_content_types(client):
    expected = {
        "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
        "swagger-ui.css": "text/css; charset=utf-8",
        "redoc.standalone.js": "text/javascript; charset=utf-8",
        "favicon.png": "image/png",
    }
    for name, media_type in expected.items():
        answer = client.get(f"/docs/assets/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == media_type, name
    assert client.get("/docs/assets/index.html").status_code == 404


def test_pages_are_not_in_the_api_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/ui", "/docs", "/redoc"))]


def test_api_routes_still_need_a_key(client):
    for method, path in [
        ("GET", "/v1/datastores"),
        ("GET", "/v1/datastores/tiny"),
        ("GET", "/v1/datastores/tiny/fields"),
        ("POST", "/v1/datastores/tiny/select"),
        ("POST", "/v1/datastores/tiny/jobs"),
        ("GET", "/v1/jobs/" + "0" * 32),
    ]:
        body = {"targets": [{"prompt": "a", "completion": "b"}], "k": 1}
        answer = client.request(method, path, json=body if method == "POST" else None)
        assert answer.status_code == 401, (method, path)
        assert answer.json()["error"]["code"] == "unauthorized"
    # With the key the API answers (the datastore failed to load here: listed as nothing).
    listing = client.get("/v1/datastores", headers={"Authorization": f"Bearer {KEY}"})
    assert listing.status_code == 200
