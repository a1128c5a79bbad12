"""Selection latency and request batching, side by side in one run on one datastore and machine.

Sections (variants of a section are interleaved, repeat by repeat, so load from other processes
hits them alike; ratios are what to read):
  search    ``scan_select`` over the memory-mapped features for one query vs a raw numpy scan
            (per checkpoint ``np.asarray(F_c[block], float32) @ q_c`` summed, i.e. the weighted
            concatenated-feature product, blocked like ``scan_select``, + ``np.argpartition``
            top-k); and 32 query sets in one ``scan_select`` call vs 32 separate calls.
            Queries are real target features (``QueryEngine.target_features``).
  request   ``QueryEngine.select`` with a few targets (p50/p95, split gradient_ms/search_ms) vs
            the bare baseline: plain forward+backward of the same pre-tokenized targets at each
            checkpoint (same adapter swap, batches and length order as the engine) + the raw
            numpy scan. Also ``select_many`` of 32 distinct requests vs 32 ``select`` calls.
  http      a real ``python -m service`` on 127.0.0.1 (free port, stopped in ``finally``):
            p50/p95 of one ``LessClient.select``, and 32 distinct concurrent requests
            (``AsyncLessClient`` + ``asyncio.gather``) vs the same 32 one after another;
            batch sizes are read from ``/metrics``. Every request is distinct (target subset
            and k) and the service's cache is off by default, so nothing is a cache hit.

Usage (the real figures; the demo datastore is built by ``./run demo``):
  python bench/service.py --datastore data/demo/<tag>/run-<key>/datastores/bigbench \
      --model-dir data/smollm2-135m-instruct --targets-dir data/demo/<tag>/splits/targets \
      --out bench/results/service.json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from less_client import AsyncLessClient, LessClient, load_targets_jsonl  # noqa: E402
from less_wire import TargetExample  # noqa: E402
from peft import set_peft_model_state_dict  # noqa: E402

from bench.report import write_report  # noqa: E402
from indexer.datastore import Datastore  # noqa: E402
from indexer.query import QueryEngine  # noqa: E402
from less_core.config import SelectionConfig  # noqa: E402
from less_core.data import Example, TokenizedExample, collate  # noqa: E402
from less_core.errors import LessError  # noqa: E402
from less_core.lora_grads import response_losses  # noqa: E402
from less_core.scoring import subtask_queries  # noqa: E402
from less_core.search import DEFAULT_BLOCK_ROWS, QuerySet, scan_select  # noqa: E402
from service.launcher import service_process  # noqa: E402
from service.worker import check_target_lengths  # noqa: E402

log = logging.getLogger("bench.service")

BENCH_KEY = "bench-key"  # loopback-only credential of the throwaway service this script starts
READY_TIMEOUT_S = 600.0
HTTP_TIMEOUT_S = 600.0


# --------------------------------------------------------------------------- helpers


def stats(xs: Sequence[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn: Callable[[], object], device: torch.device | None = None) -> tuple[float, object]:
    if device is not None:
        sync(device)
    t0 = time.perf_counter()
    out = fn()
    if device is not None:
        sync(device)
    return (time.perf_counter() - t0) * 1000, out


class Requests:
    """Distinct requests: subsets of the targets (mixing tasks, or one task) and k."""

    def __init__(self, targets: list[TargetExample], n_rows: int, base_k: int, seed: int):
        self.targets = targets
        self.n_rows = n_rows
        self.base_k = base_k
        self.rng = random.Random(seed)
        self.seen: set[tuple] = set()
        self.by_task: dict[str, list[int]] = {}
        for i, t in enumerate(targets):
            self.by_task.setdefault(t.subtask or "default", []).append(i)

    def make(self, n_targets: int, one_task: bool = False) -> tuple[list[int], int]:
        """(target indices, k), never returned before; k stays within ±32 of base_k."""
        for attempt in range(10_000):
            if one_task:
                tasks = [t for t, idx in self.by_task.items() if len(idx) >= n_targets] or list(
                    self.by_task
                )
                pool = self.by_task[self.rng.choice(tasks)]
            else:
                pool = list(range(len(self.targets)))
            idx = sorted(self.rng.sample(pool, min(n_targets, len(pool))))
            # base_k first; once subsets start repeating, a k within ±32 of it as well.
            k = self.base_k if attempt < 50 else self.base_k + attempt % 65 - 32
            k = min(self.n_rows, max(1, k))
            key = (tuple(idx), k)
            if key not in self.seen:
                self.seen.add(key)
                return idx, k
        raise LessError("could not make another distinct request; give more targets")

    def other_k(self, idx: Sequence[int], k: int) -> tuple[list[int], int]:
        """The same targets with the nearest k not asked before (a different cache key)."""
        for step in range(1, 2 * self.n_rows + 1):
            k2 = k + (step + 1) // 2 * (1 if step % 2 else -1)
            if 1 <= k2 <= self.n_rows and (tuple(idx), k2) not in self.seen:
                self.seen.add((tuple(idx), k2))
                return list(idx), k2
        raise LessError("no unused k left for these targets")


def load_targets(targets_dir: Path) -> list[TargetExample]:
    """Every *.jsonl in targets_dir; a target without a subtask gets its file's stem (its task)."""
    files = sorted(targets_dir.glob("*.jsonl"))
    if not files:
        raise LessError(f"no *.jsonl target files in {targets_dir}")
    out = []
    for f in files:
        for t in load_targets_jsonl(f):
            out.append(t if t.subtask else t.model_copy(update={"subtask": f.stem}))
    return out


def to_example(t: TargetExample) -> Example:
    """As the service does it (service.selector.to_examples)."""
    return Example.from_dict(t.model_dump(exclude_none=True), require_id=False)


# --------------------------------------------------------------------------- baselines


def raw_scan(
    features: Sequence[np.ndarray],
    q_parts: Sequence[np.ndarray],
    k: int,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> np.ndarray:
    """Top-k rows of max_s sum_c F_c @ q_c[:, s]: plain numpy, blocked to bound memory."""
    n = features[0].shape[0]
    scores = np.empty((n, q_parts[0].shape[1]), dtype=np.float32)
    for r0 in range(0, n, block_rows):
        r1 = min(n, r0 + block_rows)
        acc = scores[r0:r1]
        np.matmul(np.asarray(features[0][r0:r1], dtype=np.float32), q_parts[0], out=acc)
        for f, q in zip(features[1:], q_parts[1:]):
            acc += np.asarray(f[r0:r1], dtype=np.float32) @ q
    agg = scores[:, 0] if scores.shape[1] == 1 else scores.max(axis=1)
    top = np.argpartition(-agg, k - 1)[:k] if k < n else np.arange(n)
    return top[np.argsort(-agg[top], kind="stable")]


def q_parts_of(queries: torch.Tensor, n_ckpt: int) -> list[np.ndarray]:
    """(S, C·P) queries -> per checkpoint (P, S) float32 C-contiguous arrays."""
    p = queries.shape[1] // n_ckpt
    q = queries.numpy().astype(np.float32)
    return [np.ascontiguousarray(q[:, c * p : (c + 1) * p].T) for c in range(n_ckpt)]


def bare_forward_backward(
    engine: QueryEngine, toks: Sequence[TokenizedExample], names: Sequence[str]
) -> None:
    """Plain forward+backward of the targets at each checkpoint, batched like target_features."""
    order = sorted(range(len(toks)), key=lambda i: len(toks[i].input_ids))
    model = engine.model
    for name in names:
        set_peft_model_state_dict(model, engine.adapters[name])
        for b in range(0, len(order), engine.batch_size):
            batch = collate(
                [toks[i] for i in order[b : b + engine.batch_size]], engine.tokenizer.pad_token_id
            ).to(engine.device)
            model.zero_grad(set_to_none=True)
            response_losses(model, batch).sum().backward()
    model.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------- sections


class Bench:
    def __init__(self, ns: argparse.Namespace):
        self.ns = ns
        self.store = Datastore.open(ns.datastore)
        t0 = time.perf_counter()
        self.engine = QueryEngine(self.store, ns.model_dir, ns.device)
        self.engine_load_s = time.perf_counter() - t0
        self.device = self.engine.device
        self.names, w = self.store.weights(None)
        self.weights = [float(x) for x in w]
        self.features = [self.engine.features[n] for n in self.names]
        limit = int(self.store.manifest["tokenization"]["max_length"])
        kept, dropped = [], []
        for t in load_targets(Path(ns.targets_dir)):
            try:  # the service's own checks: untruncated length and a surviving response
                check_target_lengths(self.engine, [to_example(t)], limit)
                kept.append(t)
            except LessError as exc:
                dropped.append(f"{t.id}: {exc}")
        if not kept:
            raise LessError(f"no target in {ns.targets_dir} fits max_length={limit}")
        self.targets, self.dropped = kept, dropped
        self.examples = [to_example(t) for t in kept]
        self.toks = self.engine.tokenize_targets(self.examples)
        self.base_k = ns.k or max(1, round(0.05 * self.store.n))
        self.requests = Requests(kept, self.store.n, self.base_k, ns.seed)
        log.info(
            "datastore %s: N=%d, %d checkpoints, P=%d, %s on %s; %d targets (%d dropped), k=%d",
            self.store.version,
            self.store.n,
            len(self.names),
            self.features[0].shape[1],
            self.features[0].dtype,
            self.device,
            len(kept),
            len(dropped),
            self.base_k,
        )
        t0 = time.perf_counter()
        self.target_feats = self.engine.target_features([self.toks], self.names)[
            0
        ]  # per ckpt (T, P)
        self.all_target_features_s = time.perf_counter() - t0

    def queries(self, idx: Sequence[int]) -> torch.Tensor:
        labels = [self.targets[i].subtask or "default" for i in idx]
        return subtask_queries([f[list(idx)] for f in self.target_feats], labels, self.weights)[1]

    # ---- search only

    def search(self) -> dict:
        ns, dev = self.ns, self.device
        nq = ns.concurrency
        one_idx, one_k = self.requests.make(
            ns.search_targets, one_task=True
        )  # one subtask: a matvec
        one = QuerySet(self.queries(one_idx), one_k)
        one_parts = q_parts_of(one.queries, len(self.names))
        many = []
        for _ in range(nq):
            idx, k = self.requests.make(ns.search_targets)
            many.append(QuerySet(self.queries(idx), k))
        many_parts = [q_parts_of(qs.queries, len(self.names)) for qs in many]

        variants = {
            "scan_select_1": lambda: scan_select(self.features, [one], device=dev),
            "raw_numpy_1": lambda: raw_scan(self.features, one_parts, one.k),
            f"scan_select_{nq}_together": lambda: scan_select(self.features, many, device=dev),
            f"scan_select_{nq}_single": lambda: [
                scan_select(self.features, [qs], device=dev) for qs in many
            ],
            f"raw_numpy_{nq}_single": lambda: [
                raw_scan(self.features, p, qs.k) for p, qs in zip(many_parts, many)
            ],
        }
        # Warm (page cache, allocator, BLAS threads) and check both scans agree on the top-k set.
        ours = variants["scan_select_1"]()[0].rows.numpy()
        raw = variants["raw_numpy_1"]()
        agree = len(set(ours.tolist()) & set(raw.tolist())) / len(ours)
        for name in list(variants)[2:]:
            variants[name]()
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for rep in range(ns.search_repeats):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                times[name].append(timed_ms(variants[name], dev)[0])
        res = {name: {"ms": t, **stats(t)} for name, t in times.items()}
        p50 = {name: r["p50"] for name, r in res.items()}
        ratios = {
            "search_over_raw_numpy": p50["scan_select_1"] / p50["raw_numpy_1"],
            f"search_{nq}_single_over_together": p50[f"scan_select_{nq}_single"]
            / p50[f"scan_select_{nq}_together"],
            f"raw_numpy_{nq}_single_over_search_{nq}_together": (
                p50[f"raw_numpy_{nq}_single"] / p50[f"scan_select_{nq}_together"]
            ),
        }
        setup = {
            "single_query": {
                "targets": len(one_idx),
                "subtasks": int(one.queries.shape[0]),
                "k": one.k,
            },
            "batch_queries": nq,
            "batch_subtasks": [int(qs.queries.shape[0]) for qs in many],
            "targets_per_query": ns.search_targets,
            "block_rows": DEFAULT_BLOCK_ROWS,
            "topk_overlap_scan_select_vs_raw": agree,
        }
        return {"setup": setup, "results": res, "ratios": ratios}

    # ---- in-process requests

    def request(self) -> dict:
        ns, dev = self.ns, self.device
        out: dict = {"results": {}, "ratios": {}}
        for nt in ns.targets_per_request:
            reqs = [self.requests.make(nt) for _ in range(ns.repeats + 1)]
            sel_ms, grad_ms, search_ms, fb_ms, scan_ms = [], [], [], [], []

            def ours(idx, k):
                ms, sel = timed_ms(
                    lambda: self.engine.select(
                        [self.examples[i] for i in idx], SelectionConfig(k=k)
                    ),
                    dev,
                )
                return ms, sel

            def bare(idx, k):
                toks = [self.toks[i] for i in idx]  # tokenized beforehand: not part of the baseline
                parts = q_parts_of(self.queries(idx), len(self.names))
                a, _ = timed_ms(lambda: bare_forward_backward(self.engine, toks, self.names), dev)
                b, _ = timed_ms(lambda: raw_scan(self.features, parts, k))
                return a, b

            ours(*reqs[0])  # warm both paths
            bare(*reqs[0])
            for rep, (idx, k) in enumerate(reqs[1:]):
                first_ours = rep % 2 == 0
                if not first_ours:
                    fb, sc = bare(idx, k)
                ms, sel = ours(idx, k)
                if first_ours:
                    fb, sc = bare(idx, k)
                sel_ms.append(ms)
                grad_ms.append(sel.gradient_ms)
                search_ms.append(sel.search_ms)
                fb_ms.append(fb)
                scan_ms.append(sc)
            bare_ms = [a + b for a, b in zip(fb_ms, scan_ms)]
            r = {
                "select_ms": stats(sel_ms),
                "select_gradient_ms": stats(grad_ms),
                "select_search_ms": stats(search_ms),
                "bare_total_ms": stats(bare_ms),
                "bare_forward_backward_ms": stats(fb_ms),
                "raw_numpy_scan_ms": stats(scan_ms),
                "raw": {
                    "select_ms": sel_ms,
                    "gradient_ms": grad_ms,
                    "search_ms": search_ms,
                    "forward_backward_ms": fb_ms,
                    "raw_scan_ms": scan_ms,
                },
            }
            out["results"][f"targets_{nt}"] = r
            out["ratios"][f"select_over_bare_{nt}_targets"] = (
                r["select_ms"]["p50"] / r["bare_total_ms"]["p50"]
            )
            out["ratios"][f"gradient_over_forward_backward_{nt}_targets"] = (
                r["select_gradient_ms"]["p50"] / r["bare_forward_backward_ms"]["p50"]
            )
            out["ratios"][f"search_over_raw_scan_{nt}_targets"] = (
                r["select_search_ms"]["p50"] / r["raw_numpy_scan_ms"]["p50"]
            )

        # Whole requests batched in process: select_many(32) vs 32 select calls.
        nq, nt = ns.concurrency, ns.concurrency_targets
        runs: dict[str, dict[str, list[float]]] = {
            v: {"ms": [], "gradient_ms": [], "search_ms": []} for v in ("many", "single")
        }
        for rnd in range(ns.batch_rounds):
            reqs = [self.requests.make(nt) for _ in range(nq)]
            pairs = [([self.examples[i] for i in idx], SelectionConfig(k=k)) for idx, k in reqs]
            variants = {
                "many": lambda: self.engine.select_many(pairs),
                "single": lambda: [self.engine.select(e, c) for e, c in pairs],
            }
            for name in ("many", "single") if rnd % 2 == 0 else ("single", "many"):
                ms, sels = timed_ms(variants[name], dev)
                runs[name]["ms"].append(ms)  # gradient/search: summed over the requests' shares
                runs[name]["gradient_ms"].append(sum(s.gradient_ms for s in sels))
                runs[name]["search_ms"].append(sum(s.search_ms for s in sels))
        many_ms, single_ms = runs["many"]["ms"], runs["single"]["ms"]
        out["results"][f"select_many_{nq}"] = {**runs["many"], **stats(many_ms)}
        out["results"][f"select_{nq}_one_by_one"] = {**runs["single"], **stats(single_ms)}
        out["ratios"][f"requests_{nq}_one_by_one_over_select_many"] = min(single_ms) / min(
            many_ms
        )  # best round
        out["setup"] = {
            "targets_per_request": ns.targets_per_request,
            "repeats": ns.repeats,
            "batch_requests": nq,
            "batch_targets_per_request": nt,
            "batch_rounds": ns.batch_rounds,
            "note": "bare = forward+backward of pre-tokenized targets at each checkpoint + raw "
            "numpy scan; select also tokenizes, captures per-example gradients, projects and "
            "searches",
        }
        return out

    # ---- over HTTP

    def http(self) -> dict:
        ns = self.ns
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
            settings, work, ready_timeout_s=READY_TIMEOUT_S, env=self._service_env()
        ) as base_url:
            ready_s = time.perf_counter() - t0
            with LessClient(base_url, BENCH_KEY, timeout=HTTP_TIMEOUT_S, max_retries=0) as client:
                result = self._http_measure(client, base_url)
        result["setup"]["service_ready_s"] = ready_s
        # Record the paths as given, not resolved: reports must not carry machine paths.
        recorded = {
            k: v for k, v in settings.items() if k not in ("teams", "datastores", "jobs_dir")
        }
        recorded["datastores"] = {"bench": {"path": ns.datastore, "model_dir": ns.model_dir}}
        result["setup"]["service_config"] = recorded
        return result

    def _service_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.ns.threads:  # the service's torch gets the same thread count as this process
            env.update(OMP_NUM_THREADS=str(self.ns.threads), MKL_NUM_THREADS=str(self.ns.threads))
        return env

    def _http_measure(self, client: LessClient, base_url: str) -> dict:
        ns = self.ns
        n_cached = 0

        def body(idx: Sequence[int]) -> list[TargetExample]:
            return [self.targets[i] for i in idx]

        def one(idx, k) -> tuple[float, dict]:
            nonlocal n_cached
            t0 = time.perf_counter()
            resp = client.select("bench", body(idx), k=k)
            ms = (time.perf_counter() - t0) * 1000
            n_cached += resp.cached
            return ms, resp.timings.model_dump()

        # Warm the service (first batches pay for lazy initialisation).
        for nt in ns.targets_per_request:
            one(*self.requests.make(nt))
        walls: dict[int, list[float]] = {nt: [] for nt in ns.targets_per_request}
        servers: dict[int, list[dict]] = {nt: [] for nt in ns.targets_per_request}
        for _ in range(ns.repeats):  # sizes interleaved
            for nt in ns.targets_per_request:
                ms, timings = one(*self.requests.make(nt))
                walls[nt].append(ms)
                servers[nt].append(timings)
        latency: dict = {}
        for nt in ns.targets_per_request:
            wall, server = walls[nt], servers[nt]
            latency[f"targets_{nt}"] = {
                "client_ms": stats(wall),
                **{
                    f"server_{key}": stats([s[key] for s in server])
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
            reqs = [self.requests.make(nt) for _ in range(nq)]
            # The same target subsets in both variants; k differs slightly: no cache hit if on.
            seq_reqs = [self.requests.other_k(idx, k) for idx, k in reqs]
            order = ("seq", "conc") if rnd % 2 == 0 else ("conc", "seq")
            for variant in order:
                if variant == "seq":
                    t0 = time.perf_counter()
                    for idx, k in seq_reqs:
                        one(idx, k)
                    seq_ms.append((time.perf_counter() - t0) * 1000)
                else:
                    before = self._batch_metrics(client)
                    t0 = time.perf_counter()
                    timings, cached = asyncio.run(gather(reqs))
                    conc_ms.append((time.perf_counter() - t0) * 1000)
                    n_cached += cached
                    after = self._batch_metrics(client)
                    batches.append(
                        {
                            **self._batch_delta(before, after),
                            **{
                                f"server_{key}": stats([t[key] for t in timings])
                                for key in ("queue_ms", "total_ms")
                            },
                        }
                    )
        metrics_text = self._metrics_text(client)
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
                "metrics_batch_size": self._parse_batch_metrics(metrics_text),
            },
            "ratios": {f"http_concurrent_{nq}_throughput_over_sequential": ratio},
        }

    @staticmethod
    def _metrics_text(client: LessClient) -> str:
        return httpx.get(f"{client.base_url}/metrics", timeout=30).text

    @staticmethod
    def _parse_batch_metrics(text: str) -> dict:
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

    def _batch_metrics(self, client: LessClient) -> dict:
        return self._parse_batch_metrics(self._metrics_text(client))

    @staticmethod
    def _batch_delta(before: dict, after: dict) -> dict:
        n = after["count"] - before["count"]
        s = after["sum"] - before["sum"]
        return {"engine_calls": n, "requests": s, "mean_batch_size": s / n if n else None}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--datastore", required=True, help="datastore root (the directory holding CURRENT)"
    )
    ap.add_argument("--model-dir", required=True)
    ap.add_argument(
        "--targets-dir", required=True, help="directory of target *.jsonl files, one task each"
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="timed single requests per size (p50/p95 over these)",
    )
    ap.add_argument(
        "--search-repeats",
        type=int,
        default=None,
        help="timed repeats of each search variant (default --repeats)",
    )
    ap.add_argument(
        "--targets-per-request",
        default="4,8",
        help="comma-separated target counts of single requests",
    )
    ap.add_argument(
        "--search-targets", type=int, default=4, help="targets behind each search query"
    )
    ap.add_argument("--concurrency", type=int, default=32, help="requests/queries served together")
    ap.add_argument(
        "--concurrency-targets",
        type=int,
        default=4,
        help="targets per request in the batching tests",
    )
    ap.add_argument(
        "--batch-rounds", type=int, default=2, help="in-process select_many vs one-by-one rounds"
    )
    ap.add_argument(
        "--http-rounds", type=int, default=2, help="HTTP concurrent vs sequential rounds"
    )
    ap.add_argument(
        "--k",
        type=int,
        default=None,
        help="k of the requests (default 5 %% of the pool; varied by ±32 for uniqueness)",
    )
    ap.add_argument("--batch-window-ms", type=float, default=5.0, help="the service's batch window")
    ap.add_argument(
        "--service-cache-size", type=int, default=0, help="the service's LRU cache (0: off)"
    )
    ap.add_argument(
        "--sections", default="search,request,http", help="which of search,request,http to run"
    )
    ap.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads here and in the service (set 1 on a small shared machine: "
        "spinning OpenMP threads on busy cores cost 10-100x)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/service.json")
    ns = ap.parse_args(argv)
    ns.targets_per_request = [int(x) for x in ns.targets_per_request.split(",")]
    ns.search_repeats = ns.search_repeats or ns.repeats
    sections = [s for s in ns.sections.split(",") if s]
    unknown = set(sections) - {"search", "request", "http"}
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if ns.threads:
        torch.set_num_threads(ns.threads)

    load_before = os.getloadavg()
    bench = Bench(ns)
    report: dict = {
        "benchmark": "service",
        "command": "python bench/service.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "cpu_threads": torch.get_num_threads(),
            "device": str(bench.device),
            "gpu": torch.cuda.get_device_name(bench.device)
            if bench.device.type == "cuda"
            else None,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "loadavg_at_start": load_before,
        },
        "setup": {
            "datastore": ns.datastore,
            "version": bench.store.version,
            "n": bench.store.n,
            "checkpoints": bench.names,
            "weights": bench.weights,
            "dim": int(bench.features[0].shape[1]),
            "feature_dtype": str(bench.features[0].dtype),
            "model_dir": ns.model_dir,
            "lora": bench.store.manifest["lora"],
            "max_length": bench.store.manifest["tokenization"]["max_length"],
            "target_batch_size": bench.engine.batch_size,
            "targets_dir": ns.targets_dir,
            "targets": len(bench.targets),
            "targets_dropped": bench.dropped,
            "target_tokens_mean": float(np.mean([len(t.input_ids) for t in bench.toks])),
            "k": bench.base_k,
            "engine_load_s": bench.engine_load_s,
            "all_target_features_s": bench.all_target_features_s,
        },
        "sections": {},
    }
    for name in sections:
        log.info("section %s", name)
        report["sections"][name] = getattr(bench, name)()

    report["machine"]["loadavg_at_end"] = os.getloadavg()
    ratios = {k: v for sec in report["sections"].values() for k, v in sec["ratios"].items()}
    nq = ns.concurrency
    bars = {
        "search_over_raw_numpy_max": 1.5,
        "select_over_bare_max": 1.5,
        f"search_{nq}_single_over_together_min": 3.0,
        f"requests_{nq}_speedup_min_on_gpu": 3.0,
    }
    checks = {}
    if "search_over_raw_numpy" in ratios:
        checks["search_within_1.5x_raw_scan"] = ratios["search_over_raw_numpy"] <= 1.5
        checks["search_batched_3x"] = ratios[f"search_{nq}_single_over_together"] >= 3.0
    for nt in ns.targets_per_request:
        if f"select_over_bare_{nt}_targets" in ratios:
            checks[f"select_{nt}_targets_within_1.5x_bare"] = (
                ratios[f"select_over_bare_{nt}_targets"] <= 1.5
            )
    if bench.device.type == "cuda":
        for key in (
            f"requests_{nq}_one_by_one_over_select_many",
            f"http_concurrent_{nq}_throughput_over_sequential",
        ):
            if key in ratios:
                checks[f"{key}_3x_gpu"] = ratios[key] >= 3.0
    report.update({"ratios": ratios, "bars": bars, "checks": checks})

    summary = {
        "device": str(bench.device),
        "n": bench.store.n,
        "ratios": ratios,
        "checks": checks,
        "p50_ms": {},
    }
    for sec_name, sec in report["sections"].items():
        for key, r in sec["results"].items():
            if isinstance(r, dict) and "p50" in r:
                summary["p50_ms"][f"{sec_name}/{key}"] = r["p50"]
            elif isinstance(r, dict):
                for sub, s in r.items():
                    if isinstance(s, dict) and "p50" in s:
                        summary["p50_ms"][f"{sec_name}/{key}/{sub}"] = s["p50"]
    write_report(report, ns.out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
