"""What the selection/service benchmarks share: the setup, distinct requests, timing, the report.

Three modules each measure one thing on the same setup (one datastore, its engine, its targets)
and write one report:

  bench.search_scan     ``scan_select`` vs a raw numpy scan; 32 queries in one call vs 32 calls
  bench.select_latency  ``QueryEngine.select`` vs bare forward+backward + raw scan; ``select_many``
                        of 32 requests vs 32 ``select`` calls
  bench.http_requests   a real ``python -m service``: one request's latency; 32 concurrent
                        requests vs the same 32 one after another

They were the ``search``, ``request`` and ``http`` sections of one script, ``bench/service.py``
(``--sections``), and measure exactly what it did. Each report keeps that script's layout
(``setup``, ``sections.<section>``, then ``ratios``, ``bars`` and ``checks``), so its keys are
those of ``bench/results/service.json`` for that section. Variants of a measurement are
interleaved, repeat by repeat, so load from other processes hits them alike: ratios are what to
read.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._args import add_threads_arg, bench_parser, command_line, start
from bench.report import write_report
from indexer.datastore import Datastore
from indexer.query import QueryEngine
from indexer.requests import examples_from_targets
from less_client import load_targets_jsonl
from less_core.errors import LessError
from less_core.scoring import subtask_queries
from less_core.search import DEFAULT_BLOCK_ROWS
from less_wire import TargetExample

log = logging.getLogger("bench.service")

#: A measurement: (setup, parsed flags) -> its section (``setup``, ``results``, ``ratios``).
Measure = Callable[["ServiceSetup", argparse.Namespace], dict[str, Any]]
#: Its bars and pass/fail checks: (all ratios, flags, device) -> (bars, checks).
Judge = Callable[
    [dict[str, float], argparse.Namespace, torch.device],
    tuple[dict[str, float], dict[str, bool]],
]

# --------------------------------------------------------------------------- timing


def stats(xs: Sequence[float]) -> dict[str, float]:
    """n, p50, p95, mean, min and max of ``xs``."""
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
    """Wait for queued CUDA work, so that a timer stops when the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn: Callable[[], object], device: torch.device | None = None) -> tuple[float, object]:
    """(milliseconds, result) of ``fn()``; synchronizes ``device`` before and after when given."""
    if device is not None:
        sync(device)
    t0 = time.perf_counter()
    out = fn()
    if device is not None:
        sync(device)
    return (time.perf_counter() - t0) * 1000, out


# --------------------------------------------------------------------------- targets, requests


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


# --------------------------------------------------------------------------- raw numpy baseline


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


# --------------------------------------------------------------------------- setup


class ServiceSetup:
    """The datastore, its engine, the targets that pass the service's checks, their features."""

    def __init__(self, ns: argparse.Namespace):
        self.store = Datastore.open(ns.datastore)
        t0 = time.perf_counter()
        self.engine = QueryEngine(self.store, ns.model_dir, ns.device)
        self.engine_load_s = time.perf_counter() - t0
        self.device = self.engine.device
        self.names, w = self.store.manifest.weights(None)
        self.weights = [float(x) for x in w]
        self.features = [self.store.features(n) for n in self.names]  # one shard (demo stores)
        # The service's default token limit per target (ServiceSettings: the datastore's).
        limit = self.store.manifest.tokenization.max_length
        targets = load_targets(Path(ns.targets_dir))
        kept, examples, toks, dropped = [], [], [], []
        for t, ex in zip(targets, examples_from_targets(targets)):  # as the service converts them
            try:  # the service's own checks: untruncated length and a surviving response
                toks.append(self.engine.tokenize_targets([ex], limit)[0])
                kept.append(t)
                examples.append(ex)
            except LessError as exc:
                dropped.append(f"{t.id}: {exc}")
        if not kept:
            raise LessError(f"no target in {ns.targets_dir} fits max_length={limit}")
        self.targets, self.dropped = kept, dropped
        self.examples, self.toks = examples, toks
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
        # per checkpoint (T, P)
        self.target_feats = self.engine.target_features([self.toks], self.names)[0]
        self.all_target_features_s = time.perf_counter() - t0

    def queries(self, idx: Sequence[int]) -> torch.Tensor:
        """The subtask queries of the targets ``idx``, as the engine builds them."""
        labels = [self.targets[i].subtask or "default" for i in idx]
        return subtask_queries([f[list(idx)] for f in self.target_feats], labels, self.weights)[1]

    def report(self, ns: argparse.Namespace) -> dict[str, Any]:
        """The report's ``setup``: what was measured on, with the paths as given."""
        return {
            "datastore": ns.datastore,
            "version": self.store.version,
            "n": self.store.n,
            "checkpoints": self.names,
            "weights": self.weights,
            "dim": int(self.features[0].shape[1]),
            "feature_dtype": str(self.features[0].dtype),
            "model_dir": ns.model_dir,
            "lora": self.store.manifest.model_dump(mode="json")["lora"],
            "max_length": self.store.manifest.tokenization.max_length,
            "target_batch_size": self.engine.batch_size,
            "targets_dir": ns.targets_dir,
            "targets": len(self.targets),
            "targets_dropped": self.dropped,
            "target_tokens_mean": float(np.mean([len(t.input_ids) for t in self.toks])),
            "k": self.base_k,
            "engine_load_s": self.engine_load_s,
            "all_target_features_s": self.all_target_features_s,
        }


# --------------------------------------------------------------------------- flags


def service_parser(
    module: str, doc: str | None, *, repeats_help: str, threads_help: str = "torch threads"
) -> argparse.ArgumentParser:
    """The flags every service benchmark takes; ``--out`` defaults to bench/results/<module>."""
    ap = bench_parser(module, doc)
    ap.add_argument(
        "--datastore", required=True, help="datastore root (the directory holding CURRENT)"
    )
    ap.add_argument("--model-dir", required=True)
    ap.add_argument(
        "--targets-dir", required=True, help="directory of target *.jsonl files, one task each"
    )
    ap.add_argument("--repeats", type=int, default=20, help=repeats_help)
    ap.add_argument(
        "--k",
        type=int,
        default=None,
        help="k of the requests (default 5 %% of the pool; varied by ±32 for uniqueness)",
    )
    ap.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    add_threads_arg(
        ap,
        help=f"{threads_help} (set 1 on a small shared machine: spinning OpenMP threads on busy "
        "cores cost 10-100x)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=f"bench/results/{module}.json")
    return ap


def add_targets_per_request_arg(ap: argparse.ArgumentParser) -> None:
    """``--targets-per-request`` (parsed into a list of ints by :func:`run_measurement`)."""
    ap.add_argument(
        "--targets-per-request",
        default="4,8",
        help="comma-separated target counts of single requests",
    )


def add_concurrency_arg(ap: argparse.ArgumentParser, help: str) -> None:
    """``--concurrency``: how many requests or query sets go together (32)."""
    ap.add_argument("--concurrency", type=int, default=32, help=help)


def add_concurrency_targets_arg(ap: argparse.ArgumentParser) -> None:
    """``--concurrency-targets``: targets per request of those that go together (4)."""
    ap.add_argument(
        "--concurrency-targets",
        type=int,
        default=4,
        help="targets per request in the batching tests",
    )


# --------------------------------------------------------------------------- run and report


def run_measurement(
    benchmark: str,
    ap: argparse.ArgumentParser,
    argv: list[str] | None,
    section: str,
    measure: Measure,
    judge: Judge,
) -> int:
    """Parse flags, build the setup, measure ``section``, judge it, write and print the report."""
    ns = ap.parse_args(argv)
    if isinstance(getattr(ns, "targets_per_request", None), str):
        ns.targets_per_request = [int(x) for x in ns.targets_per_request.split(",")]
    start(ns)
    load_before = os.getloadavg()
    setup = ServiceSetup(ns)
    report: dict[str, Any] = {
        "benchmark": benchmark,
        "command": command_line(ap, argv),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "cpu_threads": torch.get_num_threads(),
            "device": str(setup.device),
            "gpu": torch.cuda.get_device_name(setup.device)
            if setup.device.type == "cuda"
            else None,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "loadavg_at_start": load_before,
        },
        "setup": setup.report(ns),
        "sections": {},
    }
    log.info("section %s", section)
    report["sections"][section] = measure(setup, ns)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    ratios = dict(report["sections"][section]["ratios"])
    bars, checks = judge(ratios, ns, setup.device)
    report.update({"ratios": ratios, "bars": bars, "checks": checks})
    summary = {
        "device": str(setup.device),
        "n": setup.store.n,
        "ratios": ratios,
        "checks": checks,
        "p50_ms": p50s(report["sections"]),
    }
    write_report(report, ns.out, summary)
    return 0


def p50s(sections: dict[str, dict]) -> dict[str, float]:
    """Every p50 in the sections' results, one or two levels down, keyed by its path."""
    out: dict[str, float] = {}
    for sec_name, sec in sections.items():
        for key, r in sec["results"].items():
            if isinstance(r, dict) and "p50" in r:
                out[f"{sec_name}/{key}"] = r["p50"]
            elif isinstance(r, dict):
                for sub, s in r.items():
                    if isinstance(s, dict) and "p50" in s:
                        out[f"{sec_name}/{key}/{sub}"] = s["p50"]
    return out
