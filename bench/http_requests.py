"""Over HTTP: one request's latency, and 32 concurrent requests vs the same 32 one after another.

A real ``python -m service`` on 127.0.0.1 (free port, stopped in ``finally``):

  latency/targets_<n>   p50/p95 of one ``LessClient.select`` with n targets, client wall time and
                        the server's gradient/search/queue/total timings
  concurrent_32         32 distinct requests at once (``AsyncLessClient`` + ``asyncio.gather``);
                        batch sizes are read from ``/metrics``
  sequential_32         the same 32 target subsets one after another

Every request is distinct (target subset and k) and the service's cache is off by default, so
nothing is a cache hit. The report's ``sections.http`` has the keys of the ``http`` section of
``bench/results/service.json`` (written by ``bench/service.py`` before it was split).

Usage (from the repository root; the demo datastore is built by ``./run demo``):
  python -m bench.http_requests --datastore data/demo/<tag>/run-<key>/datastores/bigbench \
      --model-dir data/smollm2-135m-instruct --targets-dir data/demo/<tag>/splits/targets \
      --out bench/results/http_requests.json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import torch

from bench._service_common import (
    ServiceSetup,
    add_concurrency_arg,
    add_concurrency_targets_arg,
    add_targets_per_request_arg,
    run_measurement,
    service_parser,
    stats,
)
from less_client import AsyncLessClient, LessClient
from less_wire import TargetExample
from service.launcher import service_process

BENCHMARK = "http_requests"
SECTION = "http"  # its name in bench/service.py's report, kept for the same keys

BENCH_KEY = "bench-key"  # loopback-only credential of the throwaway service this script starts
READY_TIMEOUT_S = 600.0
HTTP_TIMEOUT_S = 600.0


def measure(s: ServiceSetup, ns: argparse.Namespace) -> dict[str, Any]:
    """Start the service on the setup's datastore, measure through the SDK, stop it."""
    work = Path(tempfile.mkdtemp(prefix="less-bench-service-"))
    settings = {
        "datastores": {
            "bench": {
                "path": str(Path(ns.datastore).resolve()),
                "model_dir": str(Path(ns.model_dir).resolve()),
            }
        },
        "teams": {
            "bench": {
                "key_sha256": [hashlib.sha256(BENCH_KEY.encode()).hexdigest()],
                "datastores": ["bench"],
                "rate_per_minute": 1e9,
                "burst": 1_000_000,
            }
        },
        "jobs_dir": str(work / "jobs"),
        "max_targets": max(64, max(ns.targets_per_request), ns.concurrency_targets),
        "max_batch_requests": ns.concurrency,
        "batch_window_ms": ns.batch_window_ms,
        "queue_max": max(256, 2 * ns.concurrency),
        "request_timeout_s": HTTP_TIMEOUT_S,
        "cache_size": ns.service_cache_size,
        "device": ns.device,
    }
    t0 = time.perf_counter()
    with service_process(
        settings, work, ready_timeout_s=READY_TIMEOUT_S, env=service_env(ns)
    ) as base_url:
        ready_s = time.perf_counter() - t0
        with LessClient(base_url, BENCH_KEY, timeout=HTTP_TIMEOUT_S, max_retries=0) as client:
            result = measure_http(s, ns, client, base_url)
    result["setup"]["service_ready_s"] = ready_s
    # Record the paths as given, not resolved: reports must not carry machine paths.
    recorded = {k: v for k, v in settings.items() if k not in ("teams", "datastores", "jobs_dir")}
    recorded["datastores"] = {"bench": {"path": ns.datastore, "model_dir": ns.model_dir}}
    result["setup"]["service_config"] = recorded
    return result


def service_env(ns: argparse.Namespace) -> dict[str, str]:
    """The service's torch gets the same thread count as this process."""
    env: dict[str, str] = {}
    if ns.threads:
        env.update(OMP_NUM_THREADS=str(ns.threads), MKL_NUM_THREADS=str(ns.threads))
    return env


def measure_http(
    s: ServiceSetup, ns: argparse.Namespace, client: LessClient, base_url: str
) -> dict[str, Any]:
    """Single-request latency per size, then concurrent vs sequential rounds."""
    n_cached = 0

    def body(idx: Sequence[int]) -> list[TargetExample]:
        return [s.targets[i] for i in idx]

    def one(idx, k) -> tuple[float, dict]:
        nonlocal n_cached
        t0 = time.perf_counter()
        resp = client.select("bench", body(idx), k=k)
        ms = (time.perf_counter() - t0) * 1000
        n_cached += resp.cached
        return ms, resp.timings.model_dump()

    # Warm the service (first batches pay for lazy initialisation).
    for nt in ns.targets_per_request:
        one(*s.requests.make(nt))
    walls: dict[int, list[float]] = {nt: [] for nt in ns.targets_per_request}
    servers: dict[int, list[dict]] = {nt: [] for nt in ns.targets_per_request}
    for _ in range(ns.repeats):  # sizes interleaved
        for nt in ns.targets_per_request:
            ms, timings = one(*s.requests.make(nt))
            walls[nt].append(ms)
            servers[nt].append(timings)
    latency: dict = {}
    for nt in ns.targets_per_request:
        wall, server = walls[nt], servers[nt]
        latency[f"targets_{nt}"] = {
            "client_ms": stats(wall),
            **{
                f"server_{key}": stats([x[key] for x in server])
                for key in ("gradient_ms", "search_ms", "queue_ms", "total_ms")
            },
            "raw": {"client_ms": wall, "server": server},
        }

    nq, nt = ns.concurrency, ns.concurrency_targets

    async def gather(reqs) -> tuple[list, int]:
        async with AsyncLessClient(
            base_url, BENCH_KEY, timeout=HTTP_TIMEOUT_S, max_retries=0
        ) as aclient:
            resps = await asyncio.gather(
                *(aclient.select("bench", body(idx), k=k) for idx, k in reqs)
            )
        return [r.timings.model_dump() for r in resps], sum(r.cached for r in resps)

    seq_ms, conc_ms, batches = [], [], []
    for rnd in range(ns.http_rounds):
        reqs = [s.requests.make(nt) for _ in range(nq)]
        # The same target subsets in both variants; k differs slightly: no cache hit if on.
        seq_reqs = [s.requests.other_k(idx, k) for idx, k in reqs]
        order = ("seq", "conc") if rnd % 2 == 0 else ("conc", "seq")
        for variant in order:
            if variant == "seq":
                t0 = time.perf_counter()
                for idx, k in seq_reqs:
                    one(idx, k)
                seq_ms.append((time.perf_counter() - t0) * 1000)
            else:
                before = batch_metrics(client)
                t0 = time.perf_counter()
                timings, cached = asyncio.run(gather(reqs))
                conc_ms.append((time.perf_counter() - t0) * 1000)
                n_cached += cached
                after = batch_metrics(client)
                batches.append(
                    {
                        **batch_delta(before, after),
                        **{
                            f"server_{key}": stats([t[key] for t in timings])
                            for key in ("queue_ms", "total_ms")
                        },
                    }
                )
    text = metrics_text(client)
    ratio = min(seq_ms) / min(conc_ms)
    return {
        "setup": {
            "targets_per_request": ns.targets_per_request,
            "repeats": ns.repeats,
            "concurrent_requests": nq,
            "concurrent_targets_per_request": nt,
            "rounds": ns.http_rounds,
            "cached_responses": n_cached,
        },
        "results": {
            "latency": latency,
            f"sequential_{nq}": {
                "ms": seq_ms,
                **stats(seq_ms),
                "requests_per_s": nq * 1000 / min(seq_ms),
            },
            f"concurrent_{nq}": {
                "ms": conc_ms,
                **stats(conc_ms),
                "requests_per_s": nq * 1000 / min(conc_ms),
                "engine_batches": batches,
            },
            "metrics_batch_size": parse_batch_metrics(text),
        },
        "ratios": {f"http_concurrent_{nq}_throughput_over_sequential": ratio},
    }


# --------------------------------------------------------------------------- /metrics


def metrics_text(client: LessClient) -> str:
    return httpx.get(f"{client.base_url}/metrics", timeout=30).text


def parse_batch_metrics(text: str) -> dict[str, Any]:
    """The ``less_batch_size`` histogram: cumulative buckets, sum and count."""
    buckets, total, count = {}, 0.0, 0.0
    for line in text.splitlines():
        m = re.match(r'less_batch_size_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            buckets[m.group(1)] = float(m.group(2))
        elif line.startswith("less_batch_size_sum "):
            total = float(line.split()[1])
        elif line.startswith("less_batch_size_count "):
            count = float(line.split()[1])
    return {"buckets_cumulative": buckets, "sum": total, "count": count}


def batch_metrics(client: LessClient) -> dict[str, Any]:
    return parse_batch_metrics(metrics_text(client))


def batch_delta(before: dict, after: dict) -> dict[str, Any]:
    """Engine calls, requests and mean batch size between two ``/metrics`` reads."""
    n = after["count"] - before["count"]
    s = after["sum"] - before["sum"]
    return {"engine_calls": n, "requests": s, "mean_batch_size": s / n if n else None}


def judge(
    ratios: dict[str, float], ns: argparse.Namespace, device: torch.device
) -> tuple[dict[str, float], dict[str, bool]]:
    """On a GPU, 32 concurrent requests at least 3x the throughput of sequential ones."""
    nq = ns.concurrency
    bars = {f"requests_{nq}_speedup_min_on_gpu": 3.0}
    checks = {}
    if device.type == "cuda":  # on a CPU the target gradients are the whole cost: no bar there
        key = f"http_concurrent_{nq}_throughput_over_sequential"
        checks[f"{key}_3x_gpu"] = ratios[key] >= bars[f"requests_{nq}_speedup_min_on_gpu"]
    return bars, checks


def main(argv: list[str] | None = None) -> int:
    ap = service_parser(
        BENCHMARK,
        __doc__,
        repeats_help="timed single requests per size (p50/p95 over these)",
        threads_help="torch threads here and in the service",
    )
    add_targets_per_request_arg(ap)
    add_concurrency_arg(ap, help="concurrent requests")
    add_concurrency_targets_arg(ap)
    ap.add_argument(
        "--http-rounds", type=int, default=2, help="HTTP concurrent vs sequential rounds"
    )
    ap.add_argument("--batch-window-ms", type=float, default=5.0, help="the service's batch window")
    ap.add_argument(
        "--service-cache-size", type=int, default=0, help="the service's LRU cache (0: off)"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    return run_measurement(BENCHMARK, ap, argv, SECTION, measure, judge)


if __name__ == "__main__":
    sys.exit(main())
