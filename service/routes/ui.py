"""The web page (``/ui``) and the offline API docs (``/docs``, ``/redoc``), served by the service.

Everything these pages load comes from the service itself: the page's own HTML, CSS and JS
from ``service/ui/static/``, and Swagger UI and ReDoc from the ``fastapi-offline`` wheel's
bundled copies. So the pages work on a machine without internet access and never tell a CDN
who reads the docs.

The files are served by plain routes over a fixed list of names (read once at import), not a
``StaticFiles`` mount: a request cannot name any other file, and every path shows up in the
route table (the auth tests walk it; these routes are public, the page needs no key). The
page talks to ``/v1`` with the key the user types; only those calls are authenticated.
"""

from __future__ import annotations

import importlib.resources
import mimetypes
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, Response

from service.errors import not_found

router = APIRouter(include_in_schema=False)

UI_DIR = Path(__file__).resolve().parents[1] / "ui" / "static"
"""The page's files: ``index.html`` plus its CSS and JS modules (no build step)."""

DOCS_ASSETS_DIR = Path(str(importlib.resources.files("fastapi_offline") / "static"))
"""Swagger UI 5 and ReDoc bundles shipped inside the ``fastapi-offline`` wheel."""

DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")

OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# The page runs only its own scripts and talks only to this origin: an injected <script> or a
# fetch to elsewhere (say, a key sent off by a hostile value in the data) is refused by the
# browser. Inline SVG and data: images (none today) are the only extras allowed.
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_UI_HEADERS = {
    "Content-Security-Policy": UI_CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # A new page must reach a new service's script: no stale copy after an upgrade.
    "Cache-Control": "no-cache",
}


# Swagger UI and ReDoc need inline script and styles (FastAPI's pages start them inline; both
# bundles style with JS) and blob: workers, but nothing of another host: with this policy the
# browser refuses what a bundle would fetch from elsewhere (ReDoc's footer logo from its CDN)
# before any request leaves.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "worker-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_DOCS_HEADERS = {"Content-Security-Policy": DOCS_CSP, "Referrer-Policy": "no-referrer"}


def _listing(directory: Path, names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """The servable files of ``directory`` by name (only ``names`` when given)."""
    if not directory.is_dir():
        return {}
    files = {p.name: p for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")}
    return {n: files[n] for n in (names or tuple(sorted(files))) if n in files}


UI_FILES = _listing(UI_DIR)
DOCS_FILES = _listing(DOCS_ASSETS_DIR, DOCS_ASSETS)


def _media_type(path: Path) -> str:
    guessed = mimetypes.guess_type(path.name)[0]
    return _TYPES.get(path.suffix) or guessed or "application/octet-stream"


def _file(files: dict[str, Path], name: str, headers: dict[str, str] | None = None) -> Response:
    path = files.get(name)
    if path is None:
        raise not_found(f"no file {name!r}")
    return FileResponse(path, media_type=_media_type(path), headers=headers)


def _root(request: Request) -> str:
    """The app's mount prefix behind a proxy (``--root-path``), so asset URLs stay relative
    to this service."""
    return str(request.scope.get("root_path") or "")


@router.get("/ui")
async def ui_page() -> Response:
    """The web page: pick a datastore, run a selection, read and download it."""
    return _file(UI_FILES, "index.html", _UI_HEADERS)


@router.get("/ui/static/{filename}")
async def ui_asset(filename: str) -> Response:
    """One of the page's own files (CSS, JS modules)."""
    return _file(UI_FILES, filename, _UI_HEADERS)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the OpenAPI schema, its assets from this service."""
    root = _root(request)
    page = get_swagger_ui_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/assets/favicon.png",
        # validatorUrl null: Swagger UI would otherwise ask an outside validator about the spec.
        swagger_ui_parameters={**(request.app.swagger_ui_parameters or {}), "validatorUrl": None},
    )
    page.headers.update(_DOCS_HEADERS)
    return page


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 helper page (kept where FastAPI puts it by default)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the OpenAPI schema, its script from this service and no web fonts."""
    root = _root(request)
    page = get_redoc_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}/docs/assets/redoc.standalone.js",
        redoc_favicon_url=f"{root}/docs/assets/favicon.png",
        with_google_fonts=False,
    )
    page.headers.update(_DOCS_HEADERS)
    return page


@router.get("/docs/assets/{filename}")
async def docs_asset(filename: str) -> Response:
    """A Swagger UI / ReDoc bundle file."""
    return _file(DOCS_FILES, filename, {"Cache-Control": "public, max-age=86400"})
