"""Bad input and limits before work: a hand-written catalogue of hostile requests.

Each case gets a 4xx (or a 2xx where the input is in fact valid) with the JSON error body
``{"error": {"code", "message"}}``, within a time limit, and leaves no error or traceback in
the logs. In-process first (an app with a small body limit and body-read timeout), then the
cases that need a real socket (100 MB bodies, slow bodies, oversized headers) against a real
uvicorn process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from indexer.token_limits import TokenCounter
from less_core.data import Example, tokenize_example
from less_core.errors import DataError
from service.app import create_app
from service.launcher import service_process
from service.limits import MAX_JSON_DEPTH, RequestLimits, nested_deeper_than
from service.settings import hash_key
from tests.service.conftest import KEYS, TARGETS, auth, make_settings, wait_ready
from tests.tiny_llm import tiny_tokenizer

MAX_BODY = 2 * 1024 * 1024  # room for a 1 MB target and 10,000 small ones
READ_TIMEOUT_S = 1.0
CALL_TIMEOUT_S = 30  # any single request slower than this is a hang
SELECT = "/v1/datastores/tiny/select"
JOBS = "/v1/datastores/tiny/jobs"
VALID = {"targets": TARGETS[:1], "k": 2}


def _teams() -> dict:
    # Generous rate limits: the catalogue sends hundreds of requests with one key.
    fast = {"rate_per_minute": 1e6, "burst": 100_000}
    return {
        "alpha": {"key_sha256": [hash_key(KEYS["alpha"])], "datastores": ["tiny"], **fast},
        "beta": {"key_sha256": [hash_key(KEYS["beta"])], "datastores": ["other"], **fast},
    }


def _settings(datastore_root, tiny_model_dir, jobs_dir):
    return make_settings(
        datastore_root,
        tiny_model_dir,
        jobs_dir,
        teams=_teams(),
        max_body_bytes=MAX_BODY,
        body_read_timeout_s=READ_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def app_client(datastore_root, tiny_model_dir, tmp_path_factory):
    settings = _settings(datastore_root, tiny_model_dir, tmp_path_factory.mktemp("jobs"))
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


@pytest.fixture(autouse=True)
def no_errors_logged(caplog):
    """No request of the catalogue may log an error or a traceback."""
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]
    assert "Traceback" not in caplog.text


_pool = ThreadPoolExecutor(max_workers=4)


def call(client: TestClient, method: str, path: str, **kwargs):
    """One request, failing the test instead of hanging it."""
    return _pool.submit(client.request, method, path, **kwargs).result(timeout=CALL_TIMEOUT_S)


def assert_error(response, status: int | tuple[int, ...], needle: str | None = None) -> dict:
    """``response`` is the JSON error body with one of ``status``; returns its error."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "Traceback" not in body["error"]["message"]
    if needle is not None:
        assert needle in body["error"]["message"], body
    return body["error"]


def post_raw(client, path, raw: bytes, headers: dict | None = None, team: str | None = "alpha"):
    all_headers = {"Content-Type": "application/json", **(auth(team) if team else {})}
    return call(client, "POST", path, content=raw, headers={**all_headers, **(headers or {})})


def target_json(**fields) -> bytes:
    """A select body with one target whose fields are raw JSON snippets."""
    inner = ", ".join(f'"{k}": {v}' for k, v in fields.items())
    return b'{"targets": [{' + inner.encode() + b'}], "k": 2}'


# --- 1. text that is not Unicode: lone surrogates, NUL ------------------------------------


@pytest.mark.parametrize("path", [SELECT, JOBS])
@pytest.mark.parametrize(
    "raw, field",
    [
        (target_json(prompt='"a\\ud800b"', completion='"x"'), "targets.0.prompt"),
        (target_json(prompt='"a"', completion='"\\udfff"'), "targets.0.completion"),
        (target_json(prompt='"a\\u0000"', completion='"x"'), "targets.0.prompt"),
        (target_json(prompt='"a"', completion='"x"', id='"\\ud83d"'), "targets.0.id"),
        (target_json(prompt='"a"', completion='"x"', subtask='"s\\u0000"'), "targets.0.subtask"),
        (
            b'{"targets": [{"messages": [{"role": "user", "content": "\\ud800"},'
            b' {"role": "assistant", "content": "ok"}]}], "k": 2}',
            "targets.0.messages.0.content",
        ),
        (
            b'{"targets": [{"prompt": "a", "completion": "b"}], "k": 2,'
            b' "checkpoints": ["\\udc00"]}',
            "checkpoints.0",
        ),
        # A surrogate encoded as UTF-8 bytes (invalid UTF-8 that Python's json.loads passes).
        (b'{"targets": [{"prompt": "a\xed\xa0\x80", "completion": "x"}], "k": 2}', None),
    ],
)
def test_not_unicode_text_is_422_naming_the_field(app_client, path, raw, field):
    error = assert_error(post_raw(app_client, path, raw), (400, 422), field)
    assert error["code"] == "invalid_request"


def test_surrogate_beside_valid_requests_fails_alone(app_client):
    bad = target_json(prompt='"\\ud800"', completion='"x"')
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(post_raw, app_client, SELECT, bad)] + [
            pool.submit(
                call, app_client, "POST", SELECT, json={**VALID, "k": k}, headers=auth("alpha")
            )
            for k in (1, 2, 3)
        ]
        responses = [f.result(timeout=CALL_TIMEOUT_S) for f in futures]
    assert_error(responses[0], 422, "targets.0.prompt")
    assert [r.status_code for r in responses[1:]] == [200, 200, 200]


def test_invalid_utf8_bytes(app_client):
    for raw in (b'{"targets": [{"prompt": "\xff\xfe", "completion": "x"}], "k": 2}', b"\xff" * 10):
        assert_error(post_raw(app_client, SELECT, raw), (400, 422))


# --- 2. limits before work: auth, size, time, type, depth ----------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}])
def test_auth_before_the_body(app_client, headers):
    # Invalid bodies, yet an unauthenticated caller only ever learns "401".
    for raw in (b"{not json", b'{"targets": [{}], "k": true}', b"[" * 100_000):
        response = post_raw(app_client, SELECT, raw, headers=headers, team=None)
        assert_error(response, 401)
    response = post_raw(app_client, SELECT, b"x" * (MAX_BODY + 1), headers=headers, team=None)
    assert_error(response, 401)


def test_body_over_the_limit_is_413(app_client):
    big = b'{"targets": [{"prompt": "' + b"a" * MAX_BODY + b'", "completion": "x"}]}'
    assert_error(post_raw(app_client, SELECT, big), 413, f"exceeds {MAX_BODY} bytes")

    def chunks():  # no Content-Length: counted while read
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    response = call(
        app_client,
        "POST",
        SELECT,
        content=chunks(),
        headers={**auth("alpha"), "Content-Type": "application/json"},
    )
    assert_error(response, 413)


def test_content_length_checked_before_reading():
    # The body is never read: receive() would fail the test.
    async def receive():
        raise AssertionError("the body was read")

    sent = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("the app was called")

    limits = RequestLimits(app, lambda path, key: None, max_body_bytes=1024, body_read_timeout_s=1)
    scope = {
        "type": "http",
        "method": "POST",
        "path": SELECT,
        "raw_path": SELECT.encode(),
        "headers": [(b"content-length", str(100 * 1024 * 1024).encode())],
    }
    asyncio.run(limits(scope, receive, send))
    assert sent[0]["status"] == 413
    assert dict(sent[0]["headers"])[b"connection"] == b"close"


def test_slow_body_is_408():
    async def receive():
        await asyncio.sleep(3600)  # a client that never sends its body

    sent = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        raise AssertionError("the app was called")

    limits = RequestLimits(
        app, lambda path, key: None, max_body_bytes=1024, body_read_timeout_s=0.2
    )
    scope = {
        "type": "http",
        "method": "POST",
        "path": SELECT,
        "headers": [(b"content-length", b"100")],
    }
    start = time.monotonic()
    asyncio.run(asyncio.wait_for(limits(scope, receive, send), 5))
    assert time.monotonic() - start < 2
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"]["code"] == "http_error"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "a/b"],
)
def test_wrong_content_type_is_415(app_client, content_type):
    raw = json.dumps(VALID).encode()
    response = post_raw(app_client, SELECT, raw, headers={"Content-Type": content_type})
    assert_error(response, 415, "application/json")


def test_json_content_types_accepted(app_client):
    raw = json.dumps(VALID).encode()
    for content_type in ("application/json; charset=utf-8", "application/vnd.less+json"):
        response = post_raw(app_client, SELECT, raw, headers={"Content-Type": content_type})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 100_000])
def test_deeply_nested_json_is_400(app_client, depth):
    for raw in (
        b'{"targets": ' + b"[" * depth + b"]" * depth + b', "k": 1}',
        b'{"k": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}",
        b"[" * depth,  # unbalanced
    ):
        assert_error(post_raw(app_client, SELECT, raw), 400, "nested deeper")


def test_brackets_inside_strings_are_not_nesting(app_client):
    text = "[{" * 100 + '\\"' + "}]" * 100
    raw = json.dumps({"targets": [{"prompt": text, "completion": "x"}], "k": 2}).encode()
    assert not nested_deeper_than(raw, MAX_JSON_DEPTH)
    response = post_raw(app_client, SELECT, raw)
    assert response.status_code in (200, 400), response.text  # 400: over the token limit
    if response.status_code == 400:
        assert "tokens" in response.json()["error"]["message"]


def test_405_has_allow_header(app_client):
    response = call(app_client, "PUT", "/v1/datastores", headers=auth("alpha"))
    assert_error(response, 405)
    assert response.headers["allow"] == "GET"
    response = call(app_client, "DELETE", SELECT, headers=auth("alpha"))
    assert_error(response, 405)
    assert response.headers["allow"] == "POST"


def test_very_long_headers_in_process(app_client):
    for headers in (
        {"Authorization": "Bearer " + "k" * 100_000},
        {**auth("alpha"), "X-Long": "v" * 100_000},
        {**auth("alpha"), **{f"X-H{i}": "v" * 100 for i in range(300)}},
    ):
        assert_error(call(app_client, "GET", "/v1/datastores", headers=headers), 431)


# --- 3. strict numbers, sizes, unknown fields, one-of --------------------------------------


@pytest.mark.parametrize(
    "raw, status, needle",
    [
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "k": true}', 422, "k:"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "k": 2.0}', 422, "k:"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "k": "2"}', 422, "k:"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "k": NaN}', 422, "k:"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "k": 0}', 422, "k:"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "k": -3}', 422, "k:"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "k": 1' + b"0" * 40 + b"}", 400, "k"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "fraction": NaN}', 422, "finite"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "fraction": Infinity}', 422, "fr"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "fraction": -Infinity}', 422, "fr"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "fraction": 0}', 422, "fraction"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "fraction": -0.5}', 422, "fraction"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "fraction": 1.5}', 422, "fraction"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "fraction": true}', 422, "fraction"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "fraction": 1e-300}', 400, None),
        (
            b'{"targets": [{"prompt": "a", "completion": "b"}], "k": 1, '
            b'"search": {"candidates": NaN}}',
            422,
            "search.candidates",
        ),
        (
            b'{"targets": [{"prompt": "a", "completion": "b"}], "k": 1, '
            b'"search": {"nprobe": true}}',
            422,
            "search.nprobe",
        ),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "return_scores": "yes"}', 422, "ret"),
        (b'{"targets": [{"prompt": "a", "completion": "b"}], "kk": 1}', 422, "kk"),
        (b'{"targets": [{"prompt": "a", "completion": "b", "extra": 1}], "k": 1}', 422, "extra"),
        (
            b'{"targets": [{"messages": [{"role": "assistant", "content": "x", "name": "n"}]}]}',
            422,
            "name",
        ),
        (b'{"targets": [{}], "k": 1}', 422, "targets.0"),
        (b'{"targets": [], "k": 1}', 422, "targets"),
        (b'{"targets": {}, "k": 1}', 422, "targets"),
        (b"[]", 422, None),
        (b"null", 422, None),
        (b'"targets"', 422, None),
        (b"{not json", 422, None),
    ],
)
def test_bad_values(app_client, raw, status, needle):
    assert_error(post_raw(app_client, SELECT, raw), status, needle)


def test_whole_fraction_is_fine(app_client):
    body = {"targets": TARGETS[:1], "fraction": 1}
    response = call(app_client, "POST", SELECT, json=body, headers=auth("alpha"))
    assert response.status_code == 200, response.text
    assert len(response.json()["selected"]) == 48


def test_openapi_expresses_the_one_of_rule_and_more(app_client):
    spec = call(app_client, "GET", "/openapi.json").json()
    request_schema = spec["paths"][SELECT.replace("tiny", "{name}")]["post"]["requestBody"]
    ref = request_schema["content"]["application/json"]["schema"]["$ref"]
    document = {"$ref": ref, "components": spec["components"]}
    validator = jsonschema_rs.validator_for(document)
    chat = TARGETS[1]
    valid = [
        {"targets": TARGETS},
        {"targets": [{"prompt": "p", "completion": "c", "messages": None}]},
        {"targets": [{**chat, "prompt": None, "completion": None}]},
        {"targets": TARGETS, "fraction": None},
    ]
    invalid = [
        {"targets": [{}]},
        {"targets": [{"prompt": "p"}]},
        {"targets": [{"completion": "c"}]},
        {"targets": [{"prompt": "p", "completion": "   "}]},
        {"targets": [{**chat, "prompt": "p", "completion": "c"}]},
        {"targets": [{**chat, "prompt": "p"}]},
        {"targets": [{"messages": [{"role": "user", "content": "u"}]}]},
        {"targets": [{"messages": [{"role": "assistant", "content": " "}]}]},
        {"targets": TARGETS, "k": True},
        {"targets": TARGETS, "fraction": 0},
        {"targets": TARGETS, "k": 1, "fraction": 0.5},
        {"targets": [{"prompt": "a\u0000", "completion": "c"}]},
    ]
    for body in valid:
        assert validator.is_valid(body), body
        response = call(app_client, "POST", SELECT, json={**body, "k": 1}, headers=auth("alpha"))
        assert response.status_code == 200, (body, response.text)
    for body in invalid:
        assert not validator.is_valid(body), body
        response = call(app_client, "POST", SELECT, json=body, headers=auth("alpha"))
        assert_error(response, 422)


# --- 4. sizes: many targets, long targets, token limits checked cheaply --------------------


def test_10000_targets(app_client):
    body = {"targets": [{"prompt": f"p{i}", "completion": "c"} for i in range(10_000)], "k": 1}
    for path in (SELECT, JOBS):
        start = time.monotonic()
        response = call(app_client, "POST", path, json=body, headers=auth("alpha"))
        assert_error(response, 400, "10000 targets given")
        assert time.monotonic() - start < 5


@pytest.mark.parametrize("path", [SELECT, JOBS])
def test_one_megabyte_target(app_client, path):
    huge = "add " * (256 * 1024)
    for target in (
        {"prompt": huge, "completion": "1"},
        {"prompt": "p", "completion": huge},
        {"messages": [{"role": "user", "content": huge}, {"role": "assistant", "content": "a"}]},
    ):
        start = time.monotonic()
        response = call(app_client, "POST", path, json={"targets": [target]}, headers=auth("alpha"))
        assert_error(response, 400, "targets[0] has at least")
        assert time.monotonic() - start < 3


def test_job_with_over_long_target_is_refused_at_submission(app_client):
    body = {"targets": [TARGETS[0], {"prompt": "add " * 30, "completion": "1"}], "k": 2}
    response = call(app_client, "POST", JOBS, json=body, headers=auth("alpha"))
    error = assert_error(response, 400)
    assert error["message"].startswith("targets[1] has ")
    assert "more than the limit of 64" in error["message"]


def test_token_check_is_cheap(reference_engine):
    limit = 64
    # A 64 KB chat of 320 messages: refused without tokenizing a prefix per turn (was 5.8 s).
    turn = "x" * 200
    chat = tuple(
        {"role": "user" if i % 2 == 0 else "assistant", "content": turn} for i in range(320)
    )
    # A chat with more messages than tokens allowed, and a 5 MB prompt.
    many = tuple({"role": r, "content": ""} for r in ("user", "assistant") * 50) + (
        {"role": "assistant", "content": "a"},
    )
    examples = [
        Example(id="chat", messages=chat),
        Example(id="many", messages=many),
        Example(id="prompt", prompt="a" * 5_000_000, completion="b"),
        Example(id="completion", prompt="p", completion="c" * 5_000_000),
    ]
    for example in examples:
        start = time.perf_counter()
        with pytest.raises(DataError, match=r"targets\[0\] has at least \d+ tokens, more than"):
            reference_engine.tokenize_targets([example], limit)
        assert time.perf_counter() - start < 0.5, example.id


class _Recording:
    """A tokenizer that records the length of every text it tokenizes."""

    def __init__(self, tokenizer):
        self.inner = tokenizer
        self.lengths: list[int] = []

    def __call__(self, text, **kwargs):
        self.lengths.append(len(text))
        return self.inner(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("limit", [8, 64, 512])
def test_token_counter_work_is_bounded_by_the_limit(limit):
    tokenizer = _Recording(tiny_tokenizer())
    counter = TokenCounter(tokenizer)
    assert counter.tokens_per_message == 1
    tokenizer.lengths.clear()
    for size in (10**4, 10**5, 10**6):
        n, exact = counter.example(Example(id="x", prompt="ab c" * size, completion="d"), limit)
        assert n > limit and not exact
    assert max(tokenizer.lengths) <= 16 * (limit + 1)


def test_token_counter_is_exact_or_a_true_lower_bound():
    """Against the exact tokenization, on texts with spaces, digits, emoji and special tokens
    that a prefix may cut in the middle."""
    import random

    tokenizer = tiny_tokenizer()
    counter = TokenCounter(tokenizer)
    pieces = ["abc", " ", "  ", "\n", "12345", "é", "😀", "<|im_start|>", "<|im_end|>", "!?"]
    for trial in range(400):
        rng = random.Random(trial)
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 300)))
        if trial % 2:
            example = Example(id="x", prompt=text, completion="ok" + text[:20])
        else:
            example = Example(
                id="x",
                messages=(
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": "ok" + text[:20]},
                ),
            )
        exact = len(tokenize_example(tokenizer, example, sys.maxsize).input_ids)
        limit = rng.randint(2, 400)
        n, is_exact = counter.example(example, limit)
        if is_exact:
            assert n == exact
        else:
            assert limit < n <= exact


# --- 5. names and paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/datastores/.."),
        ("GET", "/v1/datastores/%2E%2E"),
        ("GET", "/v1/datastores/..%2Fother"),
        ("GET", "/v1/datastores/tiny%2F..%2Fother"),
        ("GET", "/v1/datastores/other%00"),
        ("GET", "/v1/datastores/%2Fetc%2Fpasswd"),
        ("POST", "/v1/datastores/..%2Fother/select"),
        ("POST", "/v1/datastores/tiny%2Fselect/select"),
        ("POST", "/v1/datastores/%2E%2E%2Fother/jobs"),
        ("GET", "/v1/jobs/..%2F..%2Fjobs.sqlite"),
        ("GET", "/v1/jobs/%2E%2E/result"),
        ("GET", "/v1/jobs/" + "a" * 5000),
        ("GET", "/v1/jobs/%FF%FE"),
        ("GET", "/v1/datastores/tiny/../other"),
    ],
)
def test_path_tricks_never_reach_other_data(app_client, method, path):
    kwargs = {"json": VALID} if method == "POST" else {}
    response = call(app_client, method, path, headers=auth("alpha"), **kwargs)
    if response.status_code == 200:  # a path that normalises to one of alpha's own
        assert "other" not in json.dumps(response.json()), response.text
    else:
        assert_error(response, (400, 404, 405, 422))
    assert "beta" not in response.text


# --- 6. over a real socket: uvicorn ----------------------------------------------------------


@pytest.fixture(scope="module")
def server(datastore_root, tiny_model_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bad-input-server")
    settings = _settings(datastore_root, tiny_model_dir, workdir / "jobs")
    with service_process(settings.model_dump(mode="json"), workdir, ready_timeout_s=90) as url:
        port = int(url.rsplit(":", 1)[1])
        yield url, port, _server_pid(port), workdir / "service.log"


def _server_pid(port: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"service" in args and str(port).encode() in args:
            return int(entry.name)
    raise LookupError(f"no service process on port {port}")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError("VmRSS")


def _request_head(port: int, method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def _raw(port: int, head: bytes, body: bytes = b"", timeout: float = 10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        return _read_response(sock)


def _json_error(status: int, headers: dict, body: bytes, expected: int) -> dict:
    assert status == expected, (status, body[:300])
    assert headers["content-type"].startswith("application/json")
    return json.loads(body)["error"]


def test_uvicorn_100mb_body_with_content_length(server):
    url, port, pid, _ = server
    rss = _rss_mb(pid)
    headers = {**auth("alpha"), "Content-Type": "application/json"}
    for extra in ({}, {"Expect": "100-continue"}):
        head = _request_head(
            port, "POST", SELECT, {**headers, **extra, "Content-Length": "104857600"}
        )
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head)  # the body is never sent: the answer comes first
            status, response_headers, body = _read_response(sock)
        assert time.monotonic() - start < 2
        _json_error(status, response_headers, body, 413)
        assert response_headers.get("connection") == "close"
    # Without a key: 401, not 413 and not after reading anything.
    head = _request_head(port, "POST", SELECT, {"Content-Length": "104857600"})
    _json_error(*_raw(port, head), 401)
    assert _rss_mb(pid) - rss < 20


def test_uvicorn_100mb_chunked_body_refused_while_read(server):
    url, port, pid, _ = server
    rss = _rss_mb(pid)
    headers = {**auth("alpha"), "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent = 0
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_request_head(port, "POST", SELECT, headers))
        try:
            while sent < 100 * 1024 * 1024:
                sock.sendall(chunk)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        try:
            status, response_headers, body = _read_response(sock)
        except ConnectionResetError:
            status = None
    assert time.monotonic() - start < 10
    assert sent < 50 * 1024 * 1024, sent  # it stopped reading long before 100 MB
    if status is not None:  # the reset can race the answer; the answer, when read, is 413
        _json_error(status, response_headers, body, 413)
    assert _rss_mb(pid) - rss < 30


def test_uvicorn_slow_body_is_408(server):
    url, port, pid, _ = server
    headers = {**auth("alpha"), "Content-Type": "application/json", "Content-Length": "1000"}
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_request_head(port, "POST", SELECT, headers) + b'{"targets": [')
        status, response_headers, body = _read_response(sock)
        assert sock.recv(1) == b""  # and the connection is closed
    assert READ_TIMEOUT_S <= time.monotonic() - start < READ_TIMEOUT_S + 3
    _json_error(status, response_headers, body, 408)


def test_uvicorn_headers_and_bytes(server):
    url, port, pid, log_path = server
    # Long headers: our 431 below uvicorn's own limit, uvicorn's plain 400 above it.
    head = _request_head(port, "GET", "/v1/datastores", {**auth("alpha"), "X-Long": "v" * 17_000})
    status, headers, body = _raw(port, head)
    assert status in (400, 431), body
    if status == 431:
        _json_error(status, headers, body, 431)
    head = _request_head(port, "GET", "/v1/datastores", {**auth("alpha"), "X-Long": "v" * 200_000})
    try:
        status, headers, body = _raw(port, head)
        assert 400 <= status < 500, status
    except (ConnectionResetError, BrokenPipeError):
        pass  # refused before it was read
    # Invalid UTF-8 and NUL in a body over the wire.
    headers = {**auth("alpha"), "Content-Type": "application/json"}
    for raw in (
        b'{"targets": [{"prompt": "\xff", "completion": "x"}], "k": 2}',
        target_json(prompt='"\\u0000"', completion='"x"'),
    ):
        head = _request_head(port, "POST", SELECT, {**headers, "Content-Length": str(len(raw))})
        status, response_headers, body = _raw(port, head, raw)
        assert status in (400, 422), body
        _json_error(status, response_headers, body, status)
    # Still healthy, and nothing above went to the log as an error.
    assert _raw(port, _request_head(port, "GET", "/healthz", {}))[0] == 200
    text = log_path.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text[-2000:]


@pytest.mark.parametrize("path", [SELECT, JOBS])
def test_chat_beginning_with_the_assistant_is_400(app_client, path):
    # Found by the fuzzer: the tokenizer refused the empty prefix of such a chat (a 500).
    chat = {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}]}
    response = call(app_client, "POST", path, json={"targets": [chat]}, headers=auth("alpha"))
    assert_error(response, 400, "targets[0]: a chat must not begin with an assistant turn")
