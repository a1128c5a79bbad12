"""Load: N clients for M seconds against a real service, a memory soak, and an overload level.

A real ``python -m service`` (uvicorn) on 127.0.0.1 on a free port, stopped in ``finally``. The
clients are asyncio tasks of this process sharing one ``httpx.AsyncClient``; each loops until
the deadline, picking one operation at a time (weights in ``MIX``):

  select_cached    one of a few fixed requests, answered once before the run: must come back
                   ``cached`` with the same ids and scores, bit for bit
  select_uncached  a target subset and k never asked before (a new cache key every time)
  job              create (202), poll every 0.2 s until done (200), download the JSONL (200)
  list             ``GET /v1/datastores`` or ``GET /v1/datastores/{name}``
  bad              one of ``BAD_CASES`` (no key, wrong key, unknown datastore, k = 0, ...):
                   must be a 4xx with the JSON error body

Every answer is classified: anything else than the expected status (a 5xx, a 2xx for a bad
request, a transport error, a wrong body, a cached answer that differs) is counted in
``errors_unexpected``. The service's RSS (``VmRSS``, and ``RssAnon``) is read from
``/proc/<pid>/status`` every ``--rss-interval-s``; ``--soak`` runs 10 minutes and reports RSS
growth after the warm-up (``--warmup-s``) against the 5 % bar.

Then, unless ``--overload-clients 0``, an overload level on a second service process with a
small queue (``--overload-queue-max``) and no cache: many more clients than the queue send
uncached selects without pausing (team ``flood``, unlimited rate) or against a small rate limit
(team ``limited``), while two clients run jobs and a probe times ``/healthz``. Expected: 200,
503 (queue full) or 429 (rate limited), each refusal with ``Retry-After``; the queue depth (from
``/metrics``) stays at most the queue size; jobs still finish; the service answers again after.

By default the datastore is the tests' tiny one (``tests.conftest.build_tiny_datastore``, the
tiny Llama of ``tests/tiny_llm.py``), built into a temporary directory; ``--datastore``,
``--model-dir`` and ``--targets-dir`` use another (e.g. the demo's; its targets must fit the
datastore's token limit).

Usage (from the repository root):
  python -m bench.load --clients 8 --seconds 60               # short run
  python -m bench.load --soak --clients 8                      # 600 s, bench/results/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench._args import bench_parser, command_line
from bench.report import write_report
from less_core.errors import LessError
from service.launcher import service_process

BENCHMARK = "load"
log = logging.getLogger("bench.load")

LOAD_KEY = "load-key"  # loopback-only credentials of the throwaway services this script starts
FLOOD_KEY = "flood-key"
LIMITED_KEY = "limited-key"
DS = "load"
READY_TIMEOUT_S = 600.0
HTTP_TIMEOUT_S = 120.0
JOB_POLL_S = 0.2
JOB_TIMEOUT_S = 300.0
SOAK_SECONDS = 600
RSS_GROWTH_BAR_PCT = 5.0

#: Operation weights of a load client.
MIX = {"select_cached": 35, "select_uncached": 25, "job": 10, "list": 15, "bad": 15}
N_HOT = 4  # fixed requests answered from the cache


# --------------------------------------------------------------------------- recording


@dataclass
class Recorder:
    """Every answer: its kind, status and latency; the unexpected ones with a reason."""

    latencies: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    kind_ms: dict[str, list[float]] = field(default_factory=dict)
    unexpected: Counter[str] = field(default_factory=Counter)
    unexpected_examples: list[str] = field(default_factory=list)
    missing_retry_after: int = 0
    cache_hits: int = 0
    cache_misses_of_hot: int = 0

    def add(self, kind: str, status: str, ms: float, problem: str | None = None) -> None:
        self.latencies.append(ms)
        self.kinds.append(kind)
        self.statuses[status] += 1
        self.by_kind.setdefault(kind, Counter())[status] += 1
        self.kind_ms.setdefault(kind, []).append(ms)
        if problem is not None:
            self.unexpected[f"{kind}: {problem}"] += 1
            if len(self.unexpected_examples) < 20:
                self.unexpected_examples.append(f"{kind} {status}: {problem}")

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors_unexpected": sum(self.unexpected.values()),
            "status_counts": dict(sorted(self.statuses.items())),
            **percentiles(self.latencies),
            "throughput_rps": self.requests / elapsed_s if elapsed_s > 0 else 0.0,
            "by_kind": {
                kind: {
                    "requests": len(self.kind_ms[kind]),
                    "status_counts": dict(sorted(counts.items())),
                    **percentiles(self.kind_ms[kind]),
                }
                for kind, counts in sorted(self.by_kind.items())
            },
            "unexpected": dict(self.unexpected),
            "unexpected_examples": self.unexpected_examples,
            "missing_retry_after": self.missing_retry_after,
            "cache_hits": self.cache_hits,
            "hot_requests_not_cached": self.cache_misses_of_hot,
        }


def percentiles(xs: Sequence[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(xs, dtype=np.float64)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
    }


# --------------------------------------------------------------------------- the service process


def service_pid(config_path: Path) -> int:
    """The pid of the ``python -m service --config <config_path>`` process started here."""
    needle = str(config_path).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"service" in argv and needle in argv:
            return int(entry.name)
    raise LessError(f"no service process with --config {config_path}")


def rss_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``RssAnon`` of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(value.split()[0]) / 1024
    return {"rss_mb": out["VmRSS"], "rss_anon_mb": out["RssAnon"]}


def team(key: str, rate_per_minute: float = 1e9, burst: int = 1_000_000) -> dict[str, Any]:
    return {
        "key_sha256": [hashlib.sha256(key.encode()).hexdigest()],
        "datastores": [DS],
        "rate_per_minute": rate_per_minute,
        "burst": burst,
    }


def service_settings(ns: argparse.Namespace, work: Path, **overrides: Any) -> dict[str, Any]:
    settings = {
        "datastores": {DS: {"path": str(ns.datastore_path), "model_dir": str(ns.model_path)}},
        "teams": {"load": team(LOAD_KEY)},
        "jobs_dir": str(work / "jobs"),
        "device": ns.device,
        "reload_interval_s": 0,
    }
    settings.update(overrides)
    return settings


def service_env(ns: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    if ns.threads:
        env.update(OMP_NUM_THREADS=str(ns.threads), MKL_NUM_THREADS=str(ns.threads))
    return env


def recorded_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings without paths or key digests (reports must not carry machine paths)."""
    out = {k: v for k, v in settings.items() if k not in ("datastores", "jobs_dir")}
    out["teams"] = {
        name: {k: v for k, v in t.items() if k != "key_sha256"}
        for name, t in settings["teams"].items()
    }
    return out


# --------------------------------------------------------------------------- requests


class Bodies:
    """Select bodies: a few hot ones (cached) and an endless supply of never-asked ones."""

    def __init__(self, targets: list[dict[str, Any]], n_rows: int, seed: int):
        self.targets = targets
        self.n_rows = n_rows
        self.rng = random.Random(seed)
        self.seen: set[tuple[tuple[int, ...], int]] = set()
        self.hot = [self.fresh() for _ in range(N_HOT)]

    def fresh(self) -> dict[str, Any]:
        """1-3 targets and a k in 1..min(N, 48), never returned before."""
        for _ in range(100_000):
            idx = tuple(sorted(self.rng.sample(range(len(self.targets)), self.rng.randint(1, 3))))
            k = self.rng.randint(1, min(self.n_rows, 48))
            if (idx, k) not in self.seen:
                self.seen.add((idx, k))
                return {"targets": [self.targets[i] for i in idx], "k": k}
        raise LessError("ran out of distinct requests; give more targets")


def bad_cases(bodies: Bodies) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(name, method, path, httpx request kwargs): each must get a 4xx JSON error."""
    good = bodies.hot[0]
    key = {"Authorization": f"Bearer {LOAD_KEY}"}
    select = f"/v1/datastores/{DS}/select"
    long_target = {"prompt": "add " * 200, "completion": "1"}  # over the token limit
    return [
        ("no_key", "GET", "/v1/datastores", {"headers": {}}),
        ("wrong_key", "POST", select, {"json": good, "headers": {"Authorization": "Bearer x"}}),
        ("unknown_datastore", "POST", "/v1/datastores/nope/select", {"json": good, "headers": key}),
        ("k_zero", "POST", select, {"json": {**good, "k": 0}, "headers": key}),
        ("k_over_pool", "POST", select, {"json": {**good, "k": 10**9}, "headers": key}),
        ("no_targets", "POST", select, {"json": {"targets": [], "k": 1}, "headers": key}),
        ("unknown_field", "POST", select, {"json": {**good, "kk": 1}, "headers": key}),
        ("malformed_json", "POST", select, {"content": b'{"targets": [', "headers": key}),
        (
            "text_content_type",
            "POST",
            select,
            {"content": b"targets", "headers": {**key, "Content-Type": "text/plain"}},
        ),
        ("over_token_limit", "POST", select, {"json": {"targets": [long_target]}, "headers": key}),
        ("unknown_job", "GET", f"/v1/jobs/{uuid.uuid4().hex}", {"headers": key}),
        ("unknown_job_result", "GET", f"/v1/jobs/{uuid.uuid4().hex}/result", {"headers": key}),
    ]


def is_json_error(resp: httpx.Response) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


def refusal_problem(resp: httpx.Response, rec: Recorder) -> str | None:
    """None for a 429/503 with Retry-After and the JSON error body, else what is wrong."""
    if "retry-after" not in resp.headers:
        rec.missing_retry_after += 1
        return f"{resp.status_code} without Retry-After"
    if not is_json_error(resp):
        return f"{resp.status_code} without the JSON error body"
    return None


class LoadClient:
    """One client's operations; every answer goes to the recorder."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        rec: Recorder,
        bodies: Bodies,
        key: str,
        refusals_ok: bool,
        reference: dict[int, list[tuple[str, float | None]]] | None = None,
    ):
        self.http = http
        self.rec = rec
        self.bodies = bodies
        self.headers = {"Authorization": f"Bearer {key}"}
        self.refusals_ok = refusals_ok  # overload: 429/503 with Retry-After are expected
        self.reference = reference or {}
        self.bad = bad_cases(bodies)

    async def call(
        self, kind: str, method: str, path: str, **kwargs: Any
    ) -> tuple[httpx.Response | None, float]:
        kwargs.setdefault("headers", self.headers)
        t0 = time.perf_counter()
        try:
            resp = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            ms = (time.perf_counter() - t0) * 1000
            self.rec.add(kind, f"transport:{type(exc).__name__}", ms, f"{type(exc).__name__}")
            return None, ms
        return resp, (time.perf_counter() - t0) * 1000

    def expect(
        self, kind: str, resp: httpx.Response, ms: float, ok: int, problem: str | None = None
    ) -> bool:
        """Records the answer; True when it is the expected success."""
        status = resp.status_code
        if status == ok:
            self.rec.add(kind, str(status), ms, problem)
            return problem is None
        if status in (429, 503) and self.refusals_ok:
            self.rec.add(kind, str(status), ms, refusal_problem(resp, self.rec))
            return False
        self.rec.add(kind, str(status), ms, f"expected {ok}, got {status}")
        return False

    async def select(self, kind: str, body: dict[str, Any], hot: int | None = None) -> None:
        resp, ms = await self.call(kind, "POST", f"/v1/datastores/{DS}/select", json=body)
        if resp is None:
            return
        problem = None
        if resp.status_code == 200:
            got = resp.json()
            pairs = [(s["id"], s["score"]) for s in got["selected"]]
            if len(pairs) != body["k"]:
                problem = f"{len(pairs)} selected for k={body['k']}"
            elif hot is not None:
                if got["cached"]:
                    self.rec.cache_hits += 1
                else:
                    self.rec.cache_misses_of_hot += 1  # evicted: not an error, but counted
                if hot in self.reference and pairs != self.reference[hot]:
                    problem = "a repeated request got a different answer"
            elif got["cached"]:
                problem = "a never-asked request was answered from the cache"
        self.expect(kind, resp, ms, 200, problem)

    async def job(self, body: dict[str, Any]) -> None:
        resp, ms = await self.call("job_create", "POST", f"/v1/datastores/{DS}/jobs", json=body)
        if resp is None or not self.expect("job_create", resp, ms, 202):
            return
        job_id = resp.json()["id"]
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while True:
            await asyncio.sleep(JOB_POLL_S)
            resp, ms = await self.call("job_poll", "GET", f"/v1/jobs/{job_id}")
            if resp is None or not self.expect("job_poll", resp, ms, 200):
                return
            status = resp.json()["status"]
            if status == "succeeded":
                break
            if status == "failed":
                self.rec.add("job_failed", "failed", 0.0, str(resp.json().get("error")))
                return
            if time.monotonic() > deadline:
                self.rec.add("job_timeout", status, 0.0, f"still {status} after {JOB_TIMEOUT_S} s")
                return
        resp, ms = await self.call("job_result", "GET", f"/v1/jobs/{job_id}/result")
        if resp is None:
            return
        n = len(resp.text.splitlines()) if resp.status_code == 200 else body["k"]
        self.expect(
            "job_result", resp, ms, 200, None if n == body["k"] else f"{n} lines for k={body['k']}"
        )

    async def listing(self) -> None:
        if self.bodies.rng.random() < 0.5:
            resp, ms = await self.call("list", "GET", "/v1/datastores")
        else:
            resp, ms = await self.call("list", "GET", f"/v1/datastores/{DS}")
        if resp is not None:
            self.expect("list", resp, ms, 200)

    async def bad_request(self) -> None:
        name, method, path, kwargs = self.bodies.rng.choice(self.bad)
        kind = f"bad:{name}"
        resp, ms = await self.call(kind, method, path, **kwargs)
        if resp is None:
            return
        status = resp.status_code
        problem = None
        if not 400 <= status < 500:
            problem = f"expected a 4xx, got {status}"
        elif status in (429, 503) and not self.refusals_ok:
            problem = f"refused with {status} in the load phase"
        elif not is_json_error(resp):
            problem = "4xx without the JSON error body"
        self.rec.add(kind, str(status), ms, problem)

    async def mixed(self, deadline: float) -> None:
        ops, weights = list(MIX), list(MIX.values())
        while time.monotonic() < deadline:
            op = self.bodies.rng.choices(ops, weights)[0]
            if op == "select_cached":
                hot = self.bodies.rng.randrange(N_HOT)
                await self.select(op, self.bodies.hot[hot], hot)
            elif op == "select_uncached":
                await self.select(op, self.bodies.fresh())
            elif op == "job":
                await self.job(self.bodies.fresh())
            elif op == "list":
                await self.listing()
            else:
                await self.bad_request()

    async def selects(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            await self.select("select_uncached", self.bodies.fresh())

    async def jobs(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            await self.job(self.bodies.fresh())


def http_client(base_url: str, n: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=HTTP_TIMEOUT_S,
        limits=httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8),
    )


async def sample_rss(
    pid: int, t0: float, interval_s: float, stop: asyncio.Event, series: list[dict[str, float]]
) -> None:
    while True:
        series.append({"t_s": round(time.monotonic() - t0, 1), **rss_mb(pid)})
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
            return
        except asyncio.TimeoutError:
            pass


# --------------------------------------------------------------------------- the load phase


async def prime(base_url: str, bodies: Bodies) -> dict[int, list[tuple[str, float | None]]]:
    """Answers the hot requests once (they are cached from then on); their reference answers."""
    reference = {}
    async with http_client(base_url, 1) as http:
        for i, body in enumerate(bodies.hot):
            resp = await http.post(
                f"/v1/datastores/{DS}/select",
                json=body,
                headers={"Authorization": f"Bearer {LOAD_KEY}"},
            )
            if resp.status_code != 200:
                raise LessError(f"priming select {i} got {resp.status_code}: {resp.text[:300]}")
            reference[i] = [(s["id"], s["score"]) for s in resp.json()["selected"]]
    return reference


async def load_phase(
    ns: argparse.Namespace, base_url: str, pid: int, bodies: Bodies
) -> dict[str, Any]:
    reference = await prime(base_url, bodies)
    rec = Recorder()
    series: list[dict[str, float]] = []
    stop = asyncio.Event()
    t0 = time.monotonic()
    deadline = t0 + ns.seconds
    sampler = asyncio.create_task(sample_rss(pid, t0, ns.rss_interval_s, stop, series))
    async with http_client(base_url, ns.clients) as http:
        clients = [
            LoadClient(http, rec, bodies, LOAD_KEY, refusals_ok=False, reference=reference)
            for _ in range(ns.clients)
        ]
        await asyncio.gather(*(c.mixed(deadline) for c in clients))
    elapsed = time.monotonic() - t0
    stop.set()
    await sampler
    return {"elapsed_s": elapsed, **rec.summary(elapsed), "rss_series": series}


def rss_growth(series: list[dict[str, float]], warmup_s: float) -> dict[str, Any]:
    """RSS after the warm-up vs at the end: growth in % (both VmRSS and RssAnon)."""
    after = [s for s in series if s["t_s"] >= warmup_s] or series[-1:]
    warm, end = after[0], series[-1]
    out: dict[str, Any] = {"warmup_s": warmup_s, "at_warmup_t_s": warm["t_s"]}
    for key in ("rss_mb", "rss_anon_mb"):
        out[f"{key}_after_warmup"] = warm[key]
        out[f"{key}_max_after_warmup"] = max(s[key] for s in after)
        out[f"{key}_growth_pct"] = 100 * (end[key] - warm[key]) / warm[key]
        out[f"{key}_max_growth_pct"] = 100 * (max(s[key] for s in after) - warm[key]) / warm[key]
    return out


# --------------------------------------------------------------------------- the overload level


PROBE = """
import json, sys, time
import httpx
url, seconds = sys.argv[1], float(sys.argv[2])
out, failures = [], {}
deadline = time.monotonic() + seconds
with httpx.Client(timeout=30) as http:
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            status = http.get(url).status_code
            out.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                failures[str(status)] = failures.get(str(status), 0) + 1
        except httpx.HTTPError as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
        time.sleep(0.25)
print(json.dumps({"ms": out, "failures": failures}))
"""


async def probe_healthz(base_url: str, seconds: float) -> dict[str, Any]:
    """``/healthz`` timed every 0.25 s from a process of its own (not this event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE,
        f"{base_url}/healthz",
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await proc.communicate()
    result = json.loads(stdout)
    return {
        "requests": len(result["ms"]),
        **percentiles(result["ms"]),
        "failures": result["failures"],
    }


async def sample_queue_depth(
    http: httpx.AsyncClient, stop: asyncio.Event, depths: list[float]
) -> None:
    """Reads ``less_queue_depth`` from ``/metrics`` every 0.25 s until stopped."""
    while not stop.is_set():
        try:
            metrics = await http.get("/metrics", headers={"Authorization": f"Bearer {LOAD_KEY}"})
            if metrics.status_code == 200:
                for line in metrics.text.splitlines():
                    if line.startswith("less_queue_depth "):
                        depths.append(float(line.split()[1]))
        except httpx.HTTPError:
            pass
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except asyncio.TimeoutError:
            pass


async def overload_phase(
    ns: argparse.Namespace, base_url: str, pid: int, bodies: Bodies
) -> dict[str, Any]:
    flood, limited, jobs = Recorder(), Recorder(), Recorder()
    n_limited = max(1, ns.overload_clients // 8)
    n_flood = ns.overload_clients - n_limited
    series: list[dict[str, float]] = []
    depths: list[float] = []
    stop = asyncio.Event()
    t0 = time.monotonic()
    deadline = t0 + ns.overload_seconds
    rss_task = asyncio.create_task(sample_rss(pid, t0, 1.0, stop, series))
    async with http_client(base_url, ns.overload_clients + 2) as http:
        probe = asyncio.create_task(probe_healthz(base_url, ns.overload_seconds))
        sampler = asyncio.create_task(sample_queue_depth(http, stop, depths))
        tasks = [
            *(
                LoadClient(http, flood, bodies, FLOOD_KEY, True).selects(deadline)
                for _ in range(n_flood)
            ),
            *(
                LoadClient(http, limited, bodies, LIMITED_KEY, True).selects(deadline)
                for _ in range(n_limited)
            ),
            *(LoadClient(http, jobs, bodies, LOAD_KEY, True).jobs(deadline) for _ in range(2)),
        ]
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        stop.set()
        healthz = await probe
        await sampler
        await rss_task
        # Afterwards the service answers at once again.
        after = Recorder()
        t_rec = time.monotonic()
        await LoadClient(http, after, bodies, LOAD_KEY, False).select(
            "select_after", bodies.fresh()
        )
        recovered_s = time.monotonic() - t_rec
    return {
        "elapsed_s": elapsed,
        "clients_flood": n_flood,
        "clients_limited": n_limited,
        "clients_jobs": 2,
        "flood": flood.summary(elapsed),
        "limited": limited.summary(elapsed),
        "jobs": jobs.summary(elapsed),
        "queue_depth_max": max(depths) if depths else None,
        "queue_depth_samples": len(depths),
        "healthz": healthz,
        "after": {**after.summary(recovered_s), "seconds": recovered_s},
        "rss_mb_start": series[0]["rss_mb"],
        "rss_mb_end": series[-1]["rss_mb"],
        "rss_mb_max": max(s["rss_mb"] for s in series),
        "rss_series": series,
    }


# --------------------------------------------------------------------------- setup


def tiny_datastore(work: Path, ns: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(datastore root, model dir, targets dir): the tests' ``datastore_root`` fixture's build."""
    from indexer.warmup import run_warmup
    from tests.conftest import (
        LORA,
        TOKENS,
        WARMUP,
        build_tiny_datastore,
        make_rows,
        write_jsonl,
    )
    from tests.tiny_llm import save_tiny_llm

    model_dir = save_tiny_llm(work / "model", seed=0)
    pool = write_jsonl(work / "pool.jsonl", make_rows(12, seed=1, prefix="p-"))
    warmup = run_warmup(model_dir, pool, work / "warmup", LORA, WARMUP, TOKENS, device="cpu")
    root = build_tiny_datastore(work / "ds", model_dir, pool, warmup)
    targets_dir = work / "targets"
    targets_dir.mkdir()
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in make_rows(ns.targets_per_task, seed=2, prefix="t-"):
        by_task.setdefault(row["task"], []).append(row)
    for task, rows in by_task.items():  # one file per task: its stem is the subtask
        write_jsonl(targets_dir / f"{task}.jsonl", rows)
    return root, model_dir, targets_dir


def wire_targets(targets_dir: Path) -> list[dict[str, Any]]:
    from bench._service_common import load_targets

    return [t.model_dump(exclude_none=True) for t in load_targets(targets_dir)]


def pool_size(datastore: Path) -> int:
    from indexer.datastore import Datastore

    return Datastore.open(datastore).n


def run(ns: argparse.Namespace, work: Path) -> dict[str, Any]:
    if ns.datastore:
        if not (ns.model_dir and ns.targets_dir):
            raise LessError("--datastore needs --model-dir and --targets-dir")
        ns.datastore_path = Path(ns.datastore).resolve()
        ns.model_path = Path(ns.model_dir).resolve()
        targets_dir = Path(ns.targets_dir)
        built = None
    else:
        t0 = time.perf_counter()
        ns.datastore_path, ns.model_path, targets_dir = tiny_datastore(work / "tiny", ns)
        built = time.perf_counter() - t0
    targets = wire_targets(targets_dir)
    n_rows = pool_size(ns.datastore_path)
    bodies = Bodies(targets, n_rows, ns.seed)
    report: dict[str, Any] = {
        "benchmark": BENCHMARK,
        "command": ns.command,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
        },
        "setup": {
            "datastore": ns.datastore or "tests.conftest.build_tiny_datastore (tiny Llama)",
            "tiny_build_s": built,
            "pool_rows": n_rows,
            "targets": len(targets),
            "mix_weights": MIX,
            "hot_requests": N_HOT,
            "bad_cases": [name for name, *_ in bad_cases(bodies)],
            "service_threads": ns.threads,
        },
    }

    # The load (and soak) phase.
    settings = service_settings(ns, work / "load")
    report["setup"]["service_config"] = recorded_settings(settings)
    with service_process(
        settings, work / "load", ready_timeout_s=READY_TIMEOUT_S, env=service_env(ns)
    ) as base_url:
        pid = service_pid(work / "load" / "service.json")
        rss_ready = rss_mb(pid)
        log.info("load: %d clients for %d s on %s", ns.clients, ns.seconds, base_url)
        phase = asyncio.run(load_phase(ns, base_url, pid, bodies))
    series = phase["rss_series"]
    growth = rss_growth(series, ns.warmup_s)
    report.update(
        {
            "clients": ns.clients,
            "seconds": ns.seconds,
            "requests": phase["requests"],
            "errors_unexpected": phase["errors_unexpected"],
            "status_counts": phase["status_counts"],
            "p50_ms": phase["p50_ms"],
            "p99_ms": phase["p99_ms"],
            "throughput_rps": phase["throughput_rps"],
            "rss_mb_start": series[0]["rss_mb"],
            "rss_mb_end": series[-1]["rss_mb"],
            "rss_mb_ready": rss_ready["rss_mb"],
            "soak": ns.soak,
            "rss_growth": growth,
            "load": phase,
        }
    )

    # The overload level.
    if ns.overload_clients:
        over = service_settings(
            ns,
            work / "overload",
            teams={
                "load": team(LOAD_KEY),
                "flood": team(FLOOD_KEY),
                "limited": team(LIMITED_KEY, ns.limited_rate_per_minute, ns.limited_burst),
            },
            queue_max=ns.overload_queue_max,
            cache_size=0,
        )
        with service_process(
            over, work / "overload", ready_timeout_s=READY_TIMEOUT_S, env=service_env(ns)
        ) as base_url:
            pid = service_pid(work / "overload" / "service.json")
            log.info(
                "overload: %d clients for %d s, queue of %d",
                ns.overload_clients,
                ns.overload_seconds,
                ns.overload_queue_max,
            )
            result = asyncio.run(overload_phase(ns, base_url, pid, bodies))
        report["overload"] = {
            "clients": ns.overload_clients,
            "seconds": ns.overload_seconds,
            "service_config": recorded_settings(over),
            **result,
        }
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    report["checks"] = checks(report, ns)
    return report


def checks(report: dict[str, Any], ns: argparse.Namespace) -> dict[str, bool]:
    out = {
        "no_unexpected_errors": report["errors_unexpected"] == 0,
        "cached_answers_identical": not any(
            "different answer" in k for k in report["load"]["unexpected"]
        ),
    }
    if ns.soak:
        g = report["rss_growth"]
        out["soak_at_least_600_s"] = report["seconds"] >= SOAK_SECONDS
        out["rss_growth_below_5pct"] = (
            g["rss_mb_growth_pct"] < RSS_GROWTH_BAR_PCT
            and g["rss_anon_mb_growth_pct"] < RSS_GROWTH_BAR_PCT
        )
    over = report.get("overload")
    if over:
        refused = sum(
            over[team]["status_counts"].get(s, 0)
            for team in ("flood", "limited")
            for s in ("429", "503")
        )
        out["overload_refused_with_retry_after"] = refused > 0 and all(
            over[team]["missing_retry_after"] == 0 for team in ("flood", "limited", "jobs")
        )
        out["overload_no_unexpected_errors"] = all(
            over[team]["errors_unexpected"] == 0 for team in ("flood", "limited", "jobs", "after")
        )
        depth = over["queue_depth_max"]
        out["overload_queue_bounded"] = depth is not None and depth <= ns.overload_queue_max
        out["overload_jobs_finished"] = (
            over["jobs"]["by_kind"].get("job_result", {}).get("status_counts", {}).get("200", 0) > 0
        )
        out["overload_recovered"] = over["after"]["status_counts"] == {"200": 1}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(BENCHMARK, __doc__)
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients of the load phase")
    ap.add_argument(
        "--seconds",
        type=int,
        default=None,
        help=f"load phase length (default 60; soak {SOAK_SECONDS})",
    )
    ap.add_argument(
        "--soak", action="store_true", help=f"memory soak: {SOAK_SECONDS} s unless --seconds"
    )
    ap.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="RSS growth is measured from this time on (default a tenth of the run)",
    )
    ap.add_argument("--rss-interval-s", type=float, default=5.0, help="RSS sampling interval")
    ap.add_argument(
        "--overload-clients", type=int, default=64, help="clients of the overload level (0: skip)"
    )
    ap.add_argument("--overload-seconds", type=int, default=30)
    ap.add_argument(
        "--overload-queue-max", type=int, default=8, help="the overload service's queue_max"
    )
    ap.add_argument("--limited-rate-per-minute", type=float, default=120.0)
    ap.add_argument("--limited-burst", type=int, default=5)
    ap.add_argument(
        "--datastore", default=None, help="a datastore root (default: build the tiny one)"
    )
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--targets-dir", default=None, help="directory of target *.jsonl files")
    ap.add_argument("--targets-per-task", type=int, default=10, help="tiny targets per task")
    ap.add_argument("--device", default="cpu", help="the service's device")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads of the service (0: torch's choice)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=f"bench/results/{BENCHMARK}.json")
    ns = ap.parse_args(argv)
    ns.command = command_line(ap, argv)
    if ns.seconds is None:
        ns.seconds = SOAK_SECONDS if ns.soak else 60
    if ns.warmup_s is None:
        ns.warmup_s = ns.seconds / 10
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="less-load-") as tmp:
        report = run(ns, Path(tmp))
    summary = {
        k: report[k]
        for k in (
            "clients",
            "seconds",
            "requests",
            "errors_unexpected",
            "status_counts",
            "p50_ms",
            "p99_ms",
            "throughput_rps",
            "rss_mb_start",
            "rss_mb_end",
        )
    }
    summary["rss_growth_pct"] = report["rss_growth"]["rss_mb_growth_pct"]
    if "overload" in report:
        over = report["overload"]
        summary["overload"] = {
            team: over[team]["status_counts"] for team in ("flood", "limited", "jobs")
        }
        summary["overload"]["queue_depth_max"] = over["queue_depth_max"]
    summary["checks"] = report["checks"]
    write_report(report, ns.out, summary)
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
