"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis), plus a hand-written catalogue.

Every answer must be a 2xx, or a 4xx whose body is the JSON error ``{"error": {"code",
"message"}}``: a 5xx, another error body, a transport error or a hang is a *problem*.

Schema fuzzing: for every operation of the service's ``/openapi.json``, ``--examples`` cases in
schemathesis' positive mode (valid per the schema) and as many in its negative mode (each
violating the schema somewhere: wrong types, missing or unknown fields, out-of-range numbers,
bytes that are not JSON), from a fixed ``--seed``. Requests carry a valid key: the team's on team
routes, the admin key on ``/v1/admin`` routes (when the service has admin keys), a team of its
own on ``/v1/keys/rotate`` (run last: rotating retires the key). Operations with a datastore in
their path are fuzzed twice, with the team's datastore and with generated names; job routes
with a real job's id and with generated ids.

Catalogue (``catalogue``): invalid UTF-8, lone surrogates, NUL bytes, huge bodies (100 MB,
declared and chunked, over a raw socket), a slow body, deeply nested JSON, wrong content types,
NaN/Infinity, negative/zero/huge/boolean ``k``, fractions outside (0, 1], unknown fields,
10,000 targets, a 1 MB target string, path tricks (``..``, ``%2F``), very long headers. A few
raw requests that are not HTTP at all (a malformed ``Content-Length``, a 300 KB header, a space
in a header name) are refused by uvicorn's own parser with a plain-text 400 before the service
sees them: those are counted, with that 400 as their expected answer.

``run_schema_fuzz`` takes any ``httpx.Client`` (a ``fastapi.testclient.TestClient`` is one), so
``tests/service/test_service_fuzz.py`` runs the same fuzzing in-process at a CI size, while this
script runs it (``--examples 150``: over 5,000 requests) against a real ``python -m service``
(uvicorn) on 127.0.0.1, on the tests' tiny datastore built in a temporary directory, and writes
``bench/results/fuzz.json``: ``{"requests", "status_counts", "5xx", "problems", ...}``.

Usage (from the repository root):
  python -m bench.fuzz                      # the committed run
  python -m bench.fuzz --examples 10        # a quick one
"""

from __future__ import annotations

import json
import logging
import platform
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._args import bench_parser, command_line
from bench.report import write_report
from less_core.errors import LessError

log = logging.getLogger("bench.fuzz")

SEED = 20_250_609
DS = "tiny"
TEAM_KEY = "fuzz-team-key"
ROTATE_KEY = "fuzz-rotate-key"
ADMIN_KEY = "fuzz-admin-key"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "fuzz.json"
TIMEOUT_S = 60.0
PARSER = "http parser: "  # raw cases refused by uvicorn itself, not by the service
MAX_PROBLEMS_KEPT = 50


# --------------------------------------------------------------------------- judging answers


def problem_of(status: int, headers: httpx.Headers | dict[str, str], body: bytes) -> str | None:
    """What is wrong with an answer (None: nothing): a 5xx, or a 4xx without the error body."""
    if status >= 500:
        return f"{status}: {body[:200]!r}"
    if status < 400:
        return None
    content_type = headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        return f"{status} with content-type {content_type!r}"
    try:
        error = json.loads(body)["error"]
        if set(error) != {"code", "message"} or not all(isinstance(v, str) for v in error.values()):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return f"{status} without the JSON error body: {body[:200]!r}"
    if "Traceback" in error["message"]:
        return f"{status} with a traceback in its message"
    return None


@dataclass
class Tally:
    """Requests, status counts and problems of one run (or one part of it)."""

    requests: int = 0
    status_counts: Counter[str] = field(default_factory=Counter)
    by_operation: dict[str, Counter[str]] = field(default_factory=dict)
    problems: list[dict[str, Any]] = field(default_factory=list)
    n_problems: int = 0
    no_cases: list[str] = field(default_factory=list)  # operations with nothing to violate

    def add(self, label: str, status: int | str, problem: str | None, request: str = "") -> None:
        self.requests += 1
        self.status_counts[str(status)] += 1
        self.by_operation.setdefault(label, Counter())[str(status)] += 1
        if problem is not None:
            self.n_problems += 1
            if len(self.problems) < MAX_PROBLEMS_KEPT:
                self.problems.append({"operation": label, "problem": problem, "request": request})

    @property
    def n_5xx(self) -> int:
        return sum(n for s, n in self.status_counts.items() if s.isdigit() and int(s) >= 500)

    def report(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "status_counts": dict(sorted(self.status_counts.items())),
            "5xx": self.n_5xx,
            "problems": self.n_problems,
            "problem_examples": self.problems,
            "no_negative_cases": self.no_cases,
            "by_operation": {
                k: dict(sorted(v.items())) for k, v in sorted(self.by_operation.items())
            },
        }


# --------------------------------------------------------------------------- schema fuzzing


def _request_of(case: Any, base_url: str, headers: dict[str, str]) -> dict[str, Any]:
    """httpx keyword arguments for a schemathesis case (bodies serialised here, NaN allowed)."""
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": {
            k: v for k, v in kwargs.get("headers", {}).items() if k.lower() != "connection"
        },
        "params": kwargs.get("params") or None,
        "cookies": kwargs.get("cookies") or None,
    }
    if "json" in kwargs:
        try:
            request["content"] = json.dumps(kwargs["json"]).encode()
        except (TypeError, ValueError):
            request["content"] = repr(kwargs["json"]).encode()
    elif "data" in kwargs and kwargs["data"] is not None:
        data = kwargs["data"]
        request["content"] = data if isinstance(data, (bytes, str)) else json.dumps(data).encode()
    return request


def _describe(request: dict[str, Any]) -> str:
    """The request, short, for the report."""
    content = request.get("content")
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    body = "" if content is None else f" body={content[:200]!r}"
    return f"{request['method']} {request['url']}{body}"


def operation_plans(
    spec: dict[str, Any], job_id: str | None, admin: bool
) -> Iterator[tuple[Any, dict[str, str], dict[str, Any]]]:
    """(operation, headers, fixed path parameters) in run order; see the module docstring."""
    import schemathesis

    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Admin routes change teams and datastores: after the others. Rotation retires its key: last.
    operations.sort(key=lambda op: (op.path.startswith("/v1/admin"), op.path == "/v1/keys/rotate"))
    for op in operations:
        if op.path.startswith("/v1/admin"):
            key = ADMIN_KEY if admin else TEAM_KEY
        elif op.path == "/v1/keys/rotate":
            key = ROTATE_KEY
        else:
            key = TEAM_KEY
        headers = {"Authorization": f"Bearer {key}"}
        fixed: list[dict[str, Any]] = [{}]
        if not op.path.startswith("/v1/admin"):
            if "{name}" in op.path:
                fixed.append({"name": DS})
            if "{job_id}" in op.path and job_id is not None:
                fixed.append({"job_id": job_id})
        for path_parameters in fixed:
            yield op, headers, path_parameters


def _sender(
    client: httpx.Client,
    strategy: Any,
    base_url: str,
    label: str,
    headers: dict[str, str],
    examples: int,
    seed: int,
    tally: Tally,
) -> Callable[[], None]:
    """A hypothesis test sending ``examples`` cases of ``strategy`` and recording each answer."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # answers are recorded, never shrunk
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def send(case: Any) -> None:
        request = _request_of(case, base_url, headers)
        try:
            response = client.request(**request)
        except httpx.HTTPError as exc:
            tally.add(label, type(exc).__name__, f"transport: {exc!r}", _describe(request))
            return
        problem = problem_of(response.status_code, response.headers, response.content)
        tally.add(label, response.status_code, problem, _describe(request))

    return send  # type: ignore[no-any-return]


def run_schema_fuzz(
    client: httpx.Client,
    spec: dict[str, Any],
    *,
    examples: int,
    seed: int = SEED,
    job_id: str | None = None,
    admin: bool = False,
    tally: Tally | None = None,
) -> Tally:
    """Positive and negative schemathesis cases for every operation, sent with ``client``."""
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    tally = tally or Tally()
    base_url = str(client.base_url).rstrip("/")
    for op, headers, path_parameters in operation_plans(spec, job_id, admin):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters)
            fixed = "".join(f", {name} fixed" for name in path_parameters)
            label = f"{op.label} [{mode.value}{fixed}]"

            send = _sender(client, strategy, base_url, label, headers, examples, seed, tally)
            try:
                send()
            except Unsatisfiable:  # nothing to violate (no parameters, no body): no cases
                tally.no_cases.append(label)
    return tally


# --------------------------------------------------------------------------- the catalogue


def _select_body(**target: Any) -> dict[str, Any]:
    return {"targets": [target], "k": 2}


GOOD_TARGET = {"prompt": "add 3 and 4 = ", "completion": "7"}


def catalogue(datastore: str = DS) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(name, method, path, httpx keyword arguments) of the hand-written bad requests."""
    select = f"/v1/datastores/{datastore}/select"
    jobs = f"/v1/datastores/{datastore}/jobs"
    key = {"Authorization": f"Bearer {TEAM_KEY}"}
    json_headers = {**key, "Content-Type": "application/json"}

    def raw(body: bytes, **headers: str) -> dict[str, Any]:
        return {"content": body, "headers": {**json_headers, **headers}}

    def body(value: Any) -> dict[str, Any]:
        return raw(json.dumps(value).encode())

    def good(**changes: Any) -> dict[str, Any]:
        return {"targets": [GOOD_TARGET], "k": 2, **changes}

    cases: list[tuple[str, str, str, dict[str, Any]]] = []
    for path in (select, jobs):
        kind = path.rsplit("/", 1)[1]
        cases += [
            (
                f"{kind}: lone surrogate",
                "POST",
                path,
                raw(b'{"targets": [{"prompt": "\\ud800", "completion": "x"}]}'),
            ),
            (
                f"{kind}: lone low surrogate in a message",
                "POST",
                path,
                raw(
                    b'{"targets": [{"messages": [{"role": "user", "content": "a\\udfffb"},'
                    b' {"role": "assistant", "content": "ok"}]}]}'
                ),
            ),
            (
                f"{kind}: surrogate as UTF-8 bytes",
                "POST",
                path,
                raw(b'{"targets": [{"prompt": "\xed\xa0\x80", "completion": "x"}]}'),
            ),
            (
                f"{kind}: NUL",
                "POST",
                path,
                raw(b'{"targets": [{"prompt": "a\\u0000", "completion": "x"}]}'),
            ),
            (
                f"{kind}: invalid UTF-8",
                "POST",
                path,
                raw(b'{"targets": [{"prompt": "\xff\xfe", "completion": "x"}]}'),
            ),
            (
                f"{kind}: 10,000 targets",
                "POST",
                path,
                body({"targets": [GOOD_TARGET] * 10_000, "k": 2}),
            ),
            (
                f"{kind}: 1 MB target",
                "POST",
                path,
                body(_select_body(prompt="add " * 262_144, completion="1")),
            ),
            (
                f"{kind}: 1 MB chat",
                "POST",
                path,
                body(
                    {
                        "targets": [
                            {
                                "messages": [
                                    {"role": "user", "content": "x" * 200},
                                    {"role": "assistant", "content": "y"},
                                ]
                                * 2500
                            }
                        ]
                    }
                ),
            ),
            (
                f"{kind}: no key, bad body",
                "POST",
                path,
                {"content": b"{", "headers": {"Content-Type": "application/json"}},
            ),
        ]
    cases += [
        ("invalid UTF-8 body", "POST", select, raw(b"\xff" * 100)),
        ("not JSON", "POST", select, raw(b"{not json")),
        ("empty body", "POST", select, raw(b"")),
        ("JSON array", "POST", select, raw(b"[]")),
        ("JSON null", "POST", select, raw(b"null")),
        ("nested 100,000 deep", "POST", select, raw(b"[" * 100_000 + b"]" * 100_000)),
        ("nested objects 1,000 deep", "POST", select, raw(b'{"a":' * 1000 + b"1" + b"}" * 1000)),
        ("unbalanced brackets", "POST", select, raw(b"{" * 50_000)),
        (
            "text/plain",
            "POST",
            select,
            raw(json.dumps(good()).encode(), **{"Content-Type": "text/plain"}),
        ),
        (
            "form",
            "POST",
            select,
            raw(b"k=1", **{"Content-Type": "application/x-www-form-urlencoded"}),
        ),
        (
            "multipart",
            "POST",
            select,
            raw(b"--x--", **{"Content-Type": "multipart/form-data; boundary=x"}),
        ),
        ("xml", "POST", select, raw(b"<k>1</k>", **{"Content-Type": "application/xml"})),
        (
            "fraction NaN",
            "POST",
            select,
            raw(b'{"targets": [{"prompt": "a", "completion": "b"}], "fraction": NaN}'),
        ),
        (
            "fraction Infinity",
            "POST",
            select,
            raw(b'{"targets": [{"prompt": "a", "completion": "b"}], "fraction": Infinity}'),
        ),
        (
            "k NaN",
            "POST",
            select,
            raw(b'{"targets": [{"prompt": "a", "completion": "b"}], "k": NaN}'),
        ),
        (
            "candidates -Infinity",
            "POST",
            select,
            raw(
                b'{"targets": [{"prompt": "a", "completion": "b"}], "k": 1, '
                b'"search": {"candidates": -Infinity}}'
            ),
        ),
        ("k true", "POST", select, body(good(k=True))),
        ("k 1.0", "POST", select, body(good(k=1.0))),
        ("k '2'", "POST", select, body(good(k="2"))),
        ("k 0", "POST", select, body(good(k=0))),
        ("k -1", "POST", select, body(good(k=-1))),
        ("k 10**40", "POST", select, body(good(k=10**40))),
        ("k 2**63", "POST", select, body(good(k=2**63))),
        ("fraction 0", "POST", select, body({"targets": [GOOD_TARGET], "fraction": 0})),
        ("fraction -0.5", "POST", select, body({"targets": [GOOD_TARGET], "fraction": -0.5})),
        ("fraction 1.5", "POST", select, body({"targets": [GOOD_TARGET], "fraction": 1.5})),
        ("fraction 1e-300", "POST", select, body({"targets": [GOOD_TARGET], "fraction": 1e-300})),
        ("fraction true", "POST", select, body({"targets": [GOOD_TARGET], "fraction": True})),
        ("k and fraction", "POST", select, body(good(fraction=0.5))),
        ("unknown field", "POST", select, body(good(kk=1))),
        (
            "unknown target field",
            "POST",
            select,
            body({"targets": [{**GOOD_TARGET, "x": 1}], "k": 1}),
        ),
        (
            "unknown message field",
            "POST",
            select,
            body({"targets": [{"messages": [{"role": "assistant", "content": "a", "name": "n"}]}]}),
        ),
        ("empty target", "POST", select, body({"targets": [{}]})),
        ("no targets", "POST", select, body({"targets": []})),
        (
            "both formats",
            "POST",
            select,
            body(
                {"targets": [{**GOOD_TARGET, "messages": [{"role": "assistant", "content": "a"}]}]}
            ),
        ),
        (
            "blank completion",
            "POST",
            select,
            body({"targets": [{"prompt": "p", "completion": "  "}]}),
        ),
        (
            "bad role",
            "POST",
            select,
            body({"targets": [{"messages": [{"role": "root", "content": "a"}]}]}),
        ),
        ("unknown checkpoint", "POST", select, body(good(checkpoints=["nope"]))),
        ("checkpoint '..'", "POST", select, body(good(checkpoints=["../../etc"]))),
        ("aggregate sum", "POST", select, body(good(aggregate="sum"))),
        ("search nprobe 0", "POST", select, body(good(search={"nprobe": 0}))),
        ("PUT datastores", "PUT", "/v1/datastores", {"headers": key}),
        ("DELETE select", "DELETE", select, {"headers": key}),
        ("PATCH job", "PATCH", "/v1/jobs/x", {"headers": key}),
        ("long header", "GET", "/v1/datastores", {"headers": {**key, "X-Long": "v" * 20_000}}),
        (
            "long key",
            "GET",
            "/v1/datastores",
            {"headers": {"Authorization": "Bearer " + "k" * 20_000}},
        ),
        (
            "many headers",
            "GET",
            "/v1/datastores",
            {"headers": {**key, **{f"X-H{i}": "v" * 50 for i in range(400)}}},
        ),
        ("no key", "GET", "/v1/datastores", {"headers": {}}),
        (
            "basic auth",
            "GET",
            "/v1/datastores",
            {"headers": {"Authorization": "Basic Zm9vOmJhcg=="}},
        ),
        ("wrong key", "GET", "/v1/datastores", {"headers": {"Authorization": "Bearer wrong"}}),
        ("admin route, team key", "GET", "/v1/admin/teams", {"headers": key}),
    ]
    for trick in (
        "..",
        "%2E%2E",
        "..%2F",
        "..%2Fother",
        f"{datastore}%2F..%2Fother",
        "%2Fetc%2Fpasswd",
        "other%00",
        "%00",
        "%FF%FE",
        "a" * 5000,
        f"{datastore}/../other",
    ):
        cases += [
            (f"path {trick[:20]!r} info", "GET", f"/v1/datastores/{trick}", {"headers": key}),
            (f"path {trick[:20]!r} select", "POST", f"/v1/datastores/{trick}/select", body(good())),
            (f"path {trick[:20]!r} job", "GET", f"/v1/jobs/{trick}", {"headers": key}),
            (f"path {trick[:20]!r} result", "GET", f"/v1/jobs/{trick}/result", {"headers": key}),
        ]
    return cases


def run_catalogue(client: httpx.Client, tally: Tally | None = None, datastore: str = DS) -> Tally:
    """Sends the catalogue with ``client``; a 2xx is fine only where the input was in fact valid."""
    tally = tally or Tally()
    for name, method, path, kwargs in catalogue(datastore):
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            tally.add(f"catalogue: {name}", type(exc).__name__, f"transport: {exc!r}", name)
            continue
        problem = problem_of(response.status_code, response.headers, response.content)
        if problem is None and response.status_code < 300:
            problem = f"{response.status_code} for a bad request"  # a redirect (3xx) is fine
        tally.add(f"catalogue: {name}", response.status_code, problem, f"{method} {path[:80]}")
    return tally


# --------------------------------------------------------------------------- raw sockets


def _head(port: int, method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed before an answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def raw_socket_cases(
    port: int, read_timeout_s: float
) -> Iterator[tuple[str, Callable[[], tuple[int, dict[str, str], bytes]]]]:
    """Cases a client library cannot send: 100 MB bodies (declared, chunked), a stalled body."""
    key = {"Authorization": f"Bearer {TEAM_KEY}", "Content-Type": "application/json"}
    select = f"/v1/datastores/{DS}/select"

    def declared(headers: dict[str, str]) -> Callable[[], tuple[int, dict[str, str], bytes]]:
        def run() -> tuple[int, dict[str, str], bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(
                    _head(port, "POST", select, {**headers, "Content-Length": str(100 * 2**20)})
                )
                return _read_answer(sock)

        return run

    def chunked() -> tuple[int, dict[str, str], bytes]:
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(_head(port, "POST", select, {**key, "Transfer-Encoding": "chunked"}))
            try:
                for _ in range(1600):  # 100 MB
                    sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return _read_answer(sock)

    def stalled() -> tuple[int, dict[str, str], bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=read_timeout_s + 10) as sock:
            sock.sendall(
                _head(port, "POST", select, {**key, "Content-Length": "1000"}) + b'{"targets": ['
            )
            return _read_answer(sock)

    def malformed(headers: dict[str, str]) -> Callable[[], tuple[int, dict[str, str], bytes]]:
        def run() -> tuple[int, dict[str, str], bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(_head(port, "POST", select, {**key, **headers}) + b"{}")
                return _read_answer(sock)

        return run

    yield "100 MB declared", declared(key)
    yield "100 MB declared, Expect: 100-continue", declared({**key, "Expect": "100-continue"})
    yield "100 MB declared, no key", declared({"Content-Type": "application/json"})
    yield "100 MB chunked", chunked
    yield "stalled body", stalled
    # Not HTTP at all: refused by uvicorn's HTTP parser (a plain-text 400) before the app.
    yield PARSER + "bad Content-Length", malformed({"Content-Length": "abc"})
    yield PARSER + "negative Content-Length", malformed({"Content-Length": "-1"})
    yield PARSER + "300 KB header", malformed({"X-Long": "v" * 300_000})
    yield PARSER + "space in a header name", malformed({"Bad Header": "x"})
    yield PARSER + "NUL in a header value", malformed({"X-Nul": "a\x00b"})


def run_raw_socket_cases(port: int, read_timeout_s: float, tally: Tally) -> dict[str, Any]:
    """The raw-socket cases; how long each took (a refusal must not wait for the body)."""
    seconds = {}
    for name, run in raw_socket_cases(port, read_timeout_s):
        start = time.monotonic()
        try:
            status, headers, body = run()
            problem = problem_of(status, headers, body)
            if name.startswith(PARSER) and status == 400:
                problem = None  # the server's own answer to a request that is not HTTP
        except (OSError, ValueError) as exc:
            status, problem = type(exc).__name__, f"transport: {exc!r}"
        seconds[name] = round(time.monotonic() - start, 3)
        tally.add(f"raw: {name}", status, problem, name)
    return seconds


# --------------------------------------------------------------------------- the script


def _server_pid(port: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"service" in argv and str(port).encode() in argv:
                return int(entry.name)
    raise LessError(f"no service process on port {port}")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise LessError(f"no VmRSS for pid {pid}")


def _hash(key: str) -> str:
    from service.settings import hash_key

    return hash_key(key)


def service_settings(
    datastore: Path, model_dir: Path, work: Path, read_timeout_s: float
) -> dict[str, Any]:
    from service.settings import ServiceSettings

    fast = {"rate_per_minute": 1e9, "burst": 10**9}
    settings: dict[str, Any] = {
        "datastores": {
            DS: {"path": str(datastore), "model_dir": str(model_dir)},
            "other": {"path": str(datastore), "model_dir": str(model_dir)},
        },
        "teams": {
            "fuzz": {"key_sha256": [_hash(TEAM_KEY)], "datastores": [DS], **fast},
            "rotator": {"key_sha256": [_hash(ROTATE_KEY)], "datastores": [DS], **fast},
            "other": {"key_sha256": [_hash("fuzz-other-key")], "datastores": ["other"], **fast},
        },
        "jobs_dir": str(work / "jobs"),
        "device": "cpu",
        "reload_interval_s": 0,
        "max_body_bytes": 2 * 2**20,
        "body_read_timeout_s": read_timeout_s,
    }
    if "admin_key_sha256" in ServiceSettings.model_fields:
        settings["admin_key_sha256"] = [_hash(ADMIN_KEY)]
    return settings


def tiny_datastore(work: Path) -> tuple[Path, Path]:
    """The tests' tiny datastore (``tests.conftest``), built under ``work``."""
    from indexer.warmup import run_warmup
    from tests.conftest import LORA, TOKENS, WARMUP, build_tiny_datastore, make_rows, write_jsonl
    from tests.tiny_llm import save_tiny_llm

    model_dir = save_tiny_llm(work / "model", seed=0)
    pool = write_jsonl(work / "pool.jsonl", make_rows(12, seed=1, prefix="p-"))
    warmup = run_warmup(model_dir, pool, work / "warmup", LORA, WARMUP, TOKENS, device="cpu")
    return build_tiny_datastore(work / "ds", model_dir, pool, warmup), model_dir


def make_job(client: httpx.Client) -> str | None:
    """A real job of the team (its id fuzzes the job routes), or None if none could be made."""
    response = client.post(
        f"/v1/datastores/{DS}/jobs",
        json={"targets": [GOOD_TARGET], "k": 3},
        headers={"Authorization": f"Bearer {TEAM_KEY}"},
    )
    return response.json()["id"] if response.status_code == 202 else None


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser("fuzz", __doc__)
    ap.add_argument("--examples", type=int, default=150, help="cases per operation and mode")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--read-timeout-s", type=float, default=2.0, help="service body-read timeout")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from service.launcher import service_process

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="less-fuzz-") as tmp:
        work = Path(tmp)
        datastore, model_dir = tiny_datastore(work)
        settings = service_settings(datastore, model_dir, work, ns.read_timeout_s)
        with service_process(settings, work / "server", ready_timeout_s=120) as url:
            port = int(url.rsplit(":", 1)[1])
            pid = _server_pid(port)
            rss_start = _rss_mb(pid)
            tally = Tally()
            with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
                log.info("catalogue")
                run_catalogue(client, tally)
                raw_seconds = run_raw_socket_cases(port, ns.read_timeout_s, tally)
                spec = client.get("/openapi.json").json()
                job_id = make_job(client)
                log.info("schema fuzzing: %d examples per operation and mode", ns.examples)
                run_schema_fuzz(
                    client,
                    spec,
                    examples=ns.examples,
                    seed=ns.seed,
                    job_id=job_id,
                    admin="admin_key_sha256" in settings,
                    tally=tally,
                )
                healthy = client.get("/healthz").status_code == 200
            rss_end = _rss_mb(pid)
            log_text = (work / "server" / "service.log").read_text()
    report = {
        **tally.report(),
        "schema_operations": len({k.split(" [")[0] for k in tally.by_operation if " [" in k}),
        "catalogue_cases": sum(
            1 for k in tally.by_operation if k.startswith(("catalogue:", "raw:"))
        ),
        "raw_socket_seconds": raw_seconds,
        "healthy_after": healthy,
        "tracebacks_in_log": log_text.count("Traceback"),
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "seconds": round(time.monotonic() - start, 1),
        "setup": {
            "examples_per_operation_and_mode": ns.examples,
            "seed": ns.seed,
            "service": "python -m service (uvicorn) on 127.0.0.1, tests' tiny datastore, CPU",
            "max_body_bytes": settings["max_body_bytes"],
            "body_read_timeout_s": ns.read_timeout_s,
            "schemathesis": _version("schemathesis"),
            "hypothesis": _version("hypothesis"),
            "python": platform.python_version(),
        },
        "command": command_line(ap, argv),
    }
    summary = {
        k: report[k]
        for k in (
            "requests",
            "status_counts",
            "5xx",
            "problems",
            "tracebacks_in_log",
            "rss_mb_start",
            "rss_mb_end",
            "seconds",
        )
    }
    write_report(report, ns.out, summary)
    return 0 if report["problems"] == 0 and report["tracebacks_in_log"] == 0 and healthy else 1


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    raise SystemExit(main())
