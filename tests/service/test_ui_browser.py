"""The web page in a real browser: headless Chromium (Playwright) against a real uvicorn service.

Each test types the key into the page and drives it as a user would; the answers on the page
(and the file it downloads) are compared with the API's own answer to the same request. The
page may load nothing from another host: every request it makes is recorded and checked, and
any console error (a Content-Security-Policy refusal shows up there) fails the test.

Skipped with the reason when Playwright or the system Chromium is missing (``.ci/run``
installs Chromium; Playwright never downloads a browser here). ``LESS_UI_SCREENSHOTS=DIR``
also saves the README's screenshots (``datastore.png``, ``selection.png``) into DIR.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from less_wire import SelectionRecord
from service.launcher import service_process
from tests.service.conftest import KEYS, LONG_TARGET, TARGETS, make_settings

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the dev extra not installed: the tests below skip
    sync_playwright = None

CHROMIUM = os.environ.get("LESS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB, too little for Chromium
    "--disable-quic",
    "--no-first-run",
    # Nothing of the browser's own (updates, sync, safe browsing) reaches the network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 90
UI_TIMEOUT_MS = 30_000
SCREENSHOTS = os.environ.get("LESS_UI_SCREENSHOTS")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        sync_playwright is None, reason="browser: playwright is not installed (dev extra)"
    ),
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason=f"browser: no Chromium at {CHROMIUM} (apt-get install chromium)",
    ),
]

KEY = KEYS["alpha"]

if sync_playwright is not None:
    # Assertions wait as long as actions: a busy CI machine answers slower than 5 s at times.
    expect.set_options(timeout=UI_TIMEOUT_MS)


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def server(datastore_root, tiny_model_dir, tmp_path_factory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("ui-server")
    settings = make_settings(datastore_root, tiny_model_dir, workdir / "jobs")
    with service_process(
        settings.model_dump(mode="json"), workdir, ready_timeout_s=START_TIMEOUT_S
    ) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def problems() -> list[str]:
    """Console errors and requests to other hosts seen by ``page``; a test that provokes one
    on purpose removes it."""
    return []


@pytest.fixture
def page(browser, server, problems) -> Iterator[Page]:
    """A fresh tab (own sessionStorage); fails the test on console errors or foreign hosts."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(UI_TIMEOUT_MS)
    origin = urlsplit(server).netloc
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(str(e)))

    def only_this_service(route) -> None:
        # Requests the page's policy blocks never get here: this sees what would go out.
        parts = urlsplit(route.request.url)
        if parts.scheme in ("http", "https") and parts.netloc != origin:
            problems.append(f"request to another host: {route.request.url}")
            route.abort()
        else:
            route.continue_()

    context.route("**/*", only_this_service)
    yield tab
    context.close()
    # A refused API call logs a console error ("Failed to load resource: ... 4xx"): expected
    # where a test provokes one; anything else is a problem.
    unexpected = [p for p in problems if "the server responded with a status of 4" not in p]
    assert not unexpected, unexpected


def js_text(value: object) -> str:
    """``value`` as the page's ``String(value)`` writes it."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def api(server: str, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.request(method, server + path, headers=headers, timeout=60, **kwargs)


def open_ui(page: Page, server: str) -> None:
    """Opens /ui, types the key, and waits for the datastore to load."""
    page.goto(server + "/ui")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.get_by_label("API key", exact=True).fill(KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#status")).to_contain_text("Datastore tiny loaded")
    # The key is kept for the tab, not in the URL or the input.
    assert page.evaluate("sessionStorage.getItem('less.apiKey')") == KEY
    assert KEY not in page.url
    expect(page.get_by_label("API key", exact=True)).to_have_value("")


def table_rows(page: Page) -> list[dict]:
    """The results table as the page shows it."""
    return page.locator("#results tbody tr.result").evaluate_all(
        """rows => rows.map(r => ({
            rank: Number(r.cells[0].textContent),
            id: r.cells[1].textContent,
            score: r.cells[2].textContent,
            subtask: r.cells[3].textContent,
            snippet: r.cells[4].textContent,
        }))"""
    )


def shot(page: Page, name: str, section: str) -> None:
    """Saves the page from its header down to the end of ``section`` (a CSS selector) when
    ``LESS_UI_SCREENSHOTS`` is set; the status line is hidden (it sticks to the viewport's top,
    which a full-page shot would paint mid-page)."""
    if not SCREENSHOTS:
        return
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
    page.evaluate("document.getElementById('status').hidden = true")
    page.evaluate("window.scrollTo(0, 0)")  # bounding boxes are then page coordinates
    top = page.locator("header.top").bounding_box()
    box = page.locator(section).bounding_box()
    assert top is not None and box is not None
    start = box["y"] if "results" in section else top["y"]
    clip = {"x": 0, "y": start, "width": 1280, "height": box["y"] + box["height"] - start}
    page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True, clip=clip)


def test_datastore_page_shows_the_manifest_summary(page, server):
    open_ui(page, server)
    summary = api(server, "GET", "/v1/datastores/tiny").json()
    expect(page.locator("#datastore option")).to_have_text(["tiny (48 rows)"])
    shown = dict(
        zip(
            page.locator("#summary dt").all_text_contents(),
            page.locator("#summary dd").all_text_contents(),
        )
    )
    assert shown["Name"] == "tiny" and shown["Version"] == summary["version"]
    assert shown["Model"] == summary["model_id"]
    assert shown["Rows"] == str(summary["n_examples"])
    projector = summary["projector"]
    assert shown["Projector"].startswith(
        f"{projector['kind']}, dim {projector['dim']}, seed {projector['seed']}"
    )
    assert shown["Built"] == summary["created_at"]
    if summary.get("n_shards") is not None:
        assert shown["Shards"] == str(summary["n_shards"])
    if summary.get("size_bytes") is not None:
        assert f"({summary['size_bytes']:,} bytes)" in shown["Size on disk"]
    checkpoints = page.locator("#checkpoints tbody tr")
    expect(checkpoints).to_have_count(len(summary["checkpoints"]))
    for row, ckpt in zip(checkpoints.all(), summary["checkpoints"]):
        cells = row.locator("th, td").all_text_contents()
        assert cells == [ckpt["name"], str(ckpt["lr"]), f"{ckpt['weight']:.4f}"]

    fields = api(server, "GET", "/v1/datastores/tiny/fields")
    if fields.status_code == 404:
        expect(page.locator("#no-field-info")).to_have_text("no field info")
    elif not fields.json()["fields"]:
        expect(page.locator("#fields")).to_have_text("The pool rows carry no metadata fields.")
    else:
        assert fields.status_code == 200, fields.text
        names = [f["name"] for f in fields.json()["fields"]]
        expect(page.locator("#fields-table tbody th")).to_have_text(names)
        for field in fields.json()["fields"]:
            row = page.locator("#fields-table tbody tr").nth(names.index(field["name"]))
            expect(row.locator("td").nth(0)).to_have_text(field["kind"])
            expect(row.locator("td").nth(1)).to_have_text(f"{field['n_distinct']:,}")
            expect(row.locator("td").nth(2)).to_have_text(f"{field['n_missing']:,}")
            for value in field["top_values"]:
                expect(row).to_contain_text(f"{js_text(value['value'])}: {value['count']:,}")
    shot(page, "datastore.png", "#datastore-section")


def test_selection_with_explanations_matches_the_api_and_downloads(page, server, tmp_path):
    K = 12
    open_ui(page, server)
    page.get_by_label("…or paste them").fill(jsonl(TARGETS))
    page.get_by_label("Rows (k)").fill(str(K))
    expect(page.get_by_label("Explain each row")).to_be_checked()  # on by default
    page.get_by_role("button", name="Run selection").click()
    expect(page.locator("#status")).to_contain_text("Selection done")

    answer = api(
        server,
        "POST",
        "/v1/datastores/tiny/select",
        json={"targets": TARGETS, "k": K, "explain": True},
    )
    assert answer.status_code == 200, answer.text
    expected = answer.json()["selected"]
    shown = table_rows(page)
    assert [r["id"] for r in shown] == [e["id"] for e in expected]
    assert [r["rank"] for r in shown] == list(range(1, K + 1))
    assert [r["score"] for r in shown] == [f"{e['score']:.4f}" for e in expected]
    assert [r["subtask"] for r in shown] == [e["subtask"] or "—" for e in expected]

    # The histogram counts every selected row, as text on its bars.
    counts = page.locator("#histogram svg text.count").all_text_contents()
    assert sum(int(c) for c in counts) == K

    with page.expect_download() as info:
        page.get_by_role("button", name="Download selection (JSONL)").click()
    path = tmp_path / "selection.jsonl"
    info.value.save_as(path)
    assert info.value.suggested_filename == "selection-tiny.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    records = [SelectionRecord.model_validate(line) for line in lines]
    assert [r.rank for r in records] == list(range(1, K + 1))
    assert [r.id for r in records] == [e["id"] for e in expected]
    assert [r.score for r in records] == [e["score"] for e in expected]  # exactly
    assert [r.subtask for r in records] == [e["subtask"] for e in expected]
    for line, row in zip(lines, expected):
        assert list(line)[:4] == ["rank", "id", "score", "subtask"]
        assert line.get("explanation") == row.get("explanation")

    if expected[0].get("explanation") is None:
        pytest.skip("the service does not explain rows yet (explain has no engine support)")
    # Rows expand to their explanation from the keyboard.
    first = expected[0]["explanation"]
    button = page.get_by_role("button", name=f"Explain rank 1 ({expected[0]['id']})")
    expect(button).to_have_attribute("aria-expanded", "false")
    button.focus()
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-expanded", "true")
    detail = page.locator("#why-1")
    expect(detail).to_be_visible()
    for contribution in first["checkpoints"]:
        expect(detail).to_contain_text(contribution["checkpoint"])
    closest = first["closest_target"]
    expect(detail).to_contain_text(f"#{closest['index']}")
    expect(detail).to_contain_text(f"similarity {closest['similarity']:.4f}")
    if expected[0]["subtask"] is not None:
        winner = detail.locator("tr.winner")
        expect(winner).to_have_count(1)
        expect(winner).to_contain_text(expected[0]["subtask"])
        expect(winner).to_contain_text("★ this subtask")
    assert shown[0]["snippet"] == (first.get("preview") or "—")
    shot(page, "selection.png", "#results-section")


def test_job_run_progress_reaches_done(page, server):
    open_ui(page, server)
    page.get_by_label("…or paste them").fill(jsonl(TARGETS[:2]))
    page.get_by_label("Rows (k)").fill("12")
    page.get_by_label("Run as").select_option("job")
    page.get_by_role("button", name="Run selection").click()
    expect(page.locator("#job-state")).to_have_text("succeeded")
    expect(page.locator("#job-progress")).to_have_js_property("value", 100)
    expect(page.locator("#job-percent")).to_have_text("100 %")
    expect(page.locator("#status")).to_contain_text("done: 12 rows")

    # The same request answered directly ranks the same rows (a job is the same selection).
    answer = api(
        server,
        "POST",
        "/v1/datastores/tiny/select",
        json={"targets": TARGETS[:2], "k": 12, "explain": True},
    )
    expected = answer.json()["selected"]
    shown = table_rows(page)
    assert [r["id"] for r in shown] == [e["id"] for e in expected]
    assert [r["score"] for r in shown] == [f"{e['score']:.4f}" for e in expected]


def test_bad_targets_are_refused_with_the_line_or_the_api_message(page, server):
    open_ui(page, server)
    targets = page.get_by_label("…or paste them")
    run = page.get_by_role("button", name="Run selection")

    # Checked in the page, line by line, before anything is sent.
    targets.fill(jsonl(TARGETS[:1]) + "{not json\n" + '{"prompt": "p"}\n')
    run.click()
    status = page.locator("#status")
    expect(status).to_contain_text(
        "Error: The selection was not sent: targets line 2: invalid JSON"
    )
    errors = page.locator("#targets-errors li")
    expect(errors).to_have_count(2)
    expect(errors.nth(1)).to_contain_text(
        "targets line 3: invalid target example: give either 'messages' or both 'prompt' and "
        "'completion'"
    )

    # Valid here, refused by the service (too many tokens): its message, verbatim.
    refused = api(
        server, "POST", "/v1/datastores/tiny/select", json={"targets": [LONG_TARGET], "k": 3}
    )
    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]["message"]
    targets.fill(jsonl([LONG_TARGET]))
    page.get_by_label("Explain each row").uncheck()
    page.get_by_label("Rows (k)").fill("3")
    run.click()
    expect(status).to_contain_text(f"answered 400 {refused.json()['error']['code']}: {message}")
    expect(errors).to_have_count(0)
    expect(page.locator("#results-section")).to_be_hidden()


AVOID = {"prompt": "count to 3 = ", "completion": "1 2 3"}


def test_every_option_of_the_form_reaches_the_api(page, server):
    """Filters, token budget, balance, max similarity, avoid examples, checkpoints: the body
    the page sends is the one a user means, and the page shows the API's answer to it."""
    open_ui(page, server)
    summary = api(server, "GET", "/v1/datastores/tiny").json()
    fields = {
        f["name"]: f for f in api(server, "GET", "/v1/datastores/tiny/fields").json()["fields"]
    }
    if not {"task", "difficulty"} <= set(fields):
        pytest.skip("the tiny datastore stores no task/difficulty metadata")
    page.get_by_label("…or paste them").fill(jsonl(TARGETS))
    page.get_by_label("Rows (k)").fill("6")
    page.get_by_label("Token budget").fill("400")
    page.get_by_role("button", name="Add filter").click()
    page.get_by_role("button", name="Add filter").click()
    first, second = page.locator(".filter-row").all()
    first.get_by_label("Field").select_option("task")
    first.get_by_label("Condition").select_option("in")
    first.get_by_label("Value").fill("add, rev")
    second.get_by_label("Field").select_option("difficulty")
    second.get_by_label("Condition").select_option("gte")
    second.get_by_label("Value").fill("2")
    page.get_by_label("Balance").select_option("subtask")
    page.get_by_label("Max similarity between selected rows").fill("0.99")
    page.get_by_label("…or paste examples whose direction to avoid").fill(jsonl([AVOID]))
    page.get_by_label("Avoid weight").fill("0.5")
    checkpoints = [c["name"] for c in summary["checkpoints"]]
    page.get_by_label(checkpoints[-1], exact=False).uncheck()

    with page.expect_request("**/v1/datastores/tiny/select") as sent:
        page.get_by_role("button", name="Run selection").click()
    expected_body = {
        "targets": TARGETS,
        "k": 6,
        "token_budget": 400,
        "filter": {"task": {"in": ["add", "rev"]}, "difficulty": {"gte": 2}},
        "balance": "subtask",
        "max_similarity": 0.99,
        "avoid": [AVOID],
        "avoid_weight": 0.5,
        "checkpoints": checkpoints[:-1],
        "explain": True,
    }
    assert sent.value.post_data_json == expected_body
    assert "authorization" in sent.value.headers  # the key travels in the header only
    assert KEY not in sent.value.url
    expect(page.locator("#status")).to_contain_text("Selection done")

    answer = api(server, "POST", "/v1/datastores/tiny/select", json=expected_body).json()
    shown = table_rows(page)
    assert [r["id"] for r in shown] == [e["id"] for e in answer["selected"]]
    assert [r["score"] for r in shown] == [f"{e['score']:.4f}" for e in answer["selected"]]
    metadata = [e["explanation"]["metadata"] for e in answer["selected"]]
    assert all(m["task"] in ("add", "rev") and m["difficulty"] >= 2 for m in metadata)
    # One checkpoint: its contribution is the whole score, with the avoid term shown.
    detail_button = page.get_by_role("button", name=f"Explain rank 1 ({shown[0]['id']})")
    detail_button.click()
    expect(page.locator("#why-1 tbody").first.locator("tr")).to_have_count(1)
    expect(page.locator("#why-1")).not_to_contain_text("no avoid examples")

    # The bars count the selected rows per value of the chosen field, as text.
    page.get_by_label("Selected rows per value of").select_option("task")
    counts: dict[str, int] = {}
    for m in metadata:
        counts[m["task"]] = counts.get(m["task"], 0) + 1
    labels = page.locator("#bars svg text.count").all_text_contents()
    assert sorted(int(label.split()[0]) for label in labels) == sorted(counts.values())


# Lines the SDK's loader refuses (each alone in a file) and lines it takes; the page must
# agree on every one, and name the line.
BAD_LINES = [
    "{not json",
    "[1, 2]",
    '"text"',
    '{"prompt": "p"}',
    '{"completion": "c"}',
    '{"prompt": "p", "completion": "   "}',
    '{"prompt": "p", "completion": "c", "messages": [{"role": "assistant", "content": "a"}]}',
    '{"messages": [{"role": "user", "content": "q"}]}',
    '{"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]}',
    '{"messages": [{"role": "assistant", "content": 3}]}',
    '{"messages": "hello"}',
    '{"prompt": "p", "completion": "c", "id": 7}',
    '{"prompt": "p\\u0000", "completion": "c"}',
    '{"prompt": "\\ud800", "completion": "c"}',
    '{"prompt": "p", "completion": "c", "subtask": ["a"]}',
]
GOOD_LINES = [
    '{"prompt": "p", "completion": "c"}',
    '{"prompt": "", "completion": "c", "id": "x", "subtask": "s", "task": "pool field"}',
    '{"messages": [{"role": "system", "content": ""}, {"role": "assistant", "content": "a"}]}',
    '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],'
    ' "prompt": null, "completion": null}',
]


def test_target_checks_in_the_page_agree_with_the_sdk_loader(page, server, tmp_path):
    from less_wire.files import InputFileError, load_targets_jsonl

    page.goto(server + "/ui")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    for line in BAD_LINES + GOOD_LINES:
        path = tmp_path / "one.jsonl"
        path.write_text("\n" + line + "\n")  # line 2: the page must name it
        try:
            sdk = [t.model_dump(exclude_none=True) for t in load_targets_jsonl(path)]
        except InputFileError:
            sdk = None
        ours = page.evaluate(
            """async (text) => {
                const { parseExamples } = await import("./ui/static/jsonl.js");
                return parseExamples(text, "targets");
            }""",
            path.read_text(),
        )
        if sdk is None:
            assert ours["examples"] == [] and len(ours["errors"]) == 1, (line, ours)
            assert ours["errors"][0].startswith("targets line 2: "), (line, ours)
        else:
            assert ours["errors"] == [], (line, ours)
            assert ours["examples"] == sdk, line


def test_key_by_keyboard_and_forget(page, server):
    page.goto(server + "/ui")
    expect(page.locator("#datastore-section")).to_be_hidden()
    key = page.get_by_label("API key", exact=True)
    key.fill("not-a-key")
    key.press("Enter")  # the form submits from the keyboard
    expect(page.locator("#status")).to_contain_text("answered 401 unauthorized")
    assert page.evaluate("sessionStorage.getItem('less.apiKey')") is None  # refused: dropped
    key.fill(KEY)
    key.press("Enter")
    expect(page.locator("#status")).to_contain_text("Datastore tiny loaded")
    page.reload()  # the tab keeps its key across a reload
    expect(page.locator("#status")).to_contain_text("Datastore tiny loaded")
    page.get_by_role("button", name="Forget key").click()
    assert page.evaluate("sessionStorage.getItem('less.apiKey')") is None
    expect(page.locator("#datastore-section")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Key forgotten.")


def test_every_control_has_a_label_and_actions_are_buttons(page, server):
    open_ui(page, server)
    page.get_by_role("button", name="Add filter").click()
    page.locator(".filter-row").get_by_label("Value").fill("rev")
    page.get_by_label("…or paste them").fill(jsonl(TARGETS))
    page.get_by_label("Rows (k)").fill("3")
    page.get_by_role("button", name="Run selection").click()
    expect(page.locator("#status")).to_contain_text("Selection done")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll("input, select, textarea")]
            .filter(el => el.type !== "hidden" && !el.labels.length
                    && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby"))
            .map(el => el.outerHTML)"""
    )
    assert unlabelled == []
    # Everything clickable is a <button> (keyboard-reachable, announced as a button), and the
    # tables say which cells are headers.
    assert (
        page.locator("[onclick], a:not([href]), div[role=button], span[role=button]").count() == 0
    )
    assert page.locator("#results > thead th[scope=col]").count() == 7
    expect(page.locator("#status")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#histogram svg")).to_have_attribute("role", "img")


@pytest.mark.parametrize(
    ("path", "ready"), [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")]
)
def test_docs_render_without_leaving_the_service(page, server, problems, path, ready):
    # The page fixture fails the test on any request to another host.
    page.goto(server + path)
    expect(page.locator(ready).first).to_contain_text("LESS gradient search service")
    if path == "/docs":
        expect(page.locator(".opblock-summary-path").first).to_be_visible()
    else:
        # ReDoc's bundle asks its CDN for a footer logo; the page's policy refuses it before
        # any request leaves (the browser says so on the console, and no request is seen).
        page.wait_for_timeout(300)
        refused = [p for p in problems if "cdn.redoc.ly" in p and "Content Security Policy" in p]
        for refusal in refused:
            problems.remove(refusal)


def test_job_or_direct_request_by_expected_rows(page, server):
    page.goto(server + "/ui")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    cases = [  # (mode, body, pool rows) -> runs as a job
        (("auto", {"k": 1000}, 10**6), False),
        (("auto", {"k": 1001}, 10**6), True),
        (("auto", {"k": 5000}, 800), False),  # k above the pool: the pool's rows at most
        (("auto", {"fraction": 0.05}, 20_000), False),  # 1,000 rows
        (("auto", {"fraction": 0.05}, 20_001), True),
        (("auto", {}, 20_001), True),  # the default 5 %
        (("auto", {}, 20_000), False),
        (("auto", {"token_budget": 10**6}, 1_001), True),  # a budget alone: up to the pool
        (("auto", {"token_budget": 10**6, "k": 10}, 10**6), False),
        (("now", {"k": 10**6}, 10**7), False),
        (("job", {"k": 1}, 10), True),
    ]
    answers = page.evaluate(
        """async (cases) => {
            const { runsAsJob } = await import("./ui/static/plan.js");
            return cases.map(([mode, body, n]) => runsAsJob(mode, body, n));
        }""",
        [case for case, _ in cases],
    )
    assert answers == [expected for _, expected in cases]


def test_unparsable_number_is_refused_not_ignored(page, server):
    open_ui(page, server)
    page.get_by_label("…or paste them").fill(jsonl(TARGETS))
    page.get_by_label("Rows (k)").press_sequentially("1e")  # a number input reads "" for it
    page.get_by_role("button", name="Run selection").click()
    expect(page.locator("#status")).to_contain_text("not sent: k must be a number")
    expect(page.locator("#results-section")).to_be_hidden()
