"""Search alone: ``scan_select`` vs a raw numpy scan, and 32 queries in one call vs 32 calls.

Over the memory-mapped features of a real datastore, with queries built from real target features
(``QueryEngine.target_features``):

  scan_select_1              ``scan_select`` for one query (targets of one task: a matvec)
  raw_numpy_1                the same query as a raw numpy scan: per checkpoint
                             ``np.asarray(F_c[block], float32) @ q_c`` summed (the weighted
                             concatenated-feature product), blocked like ``scan_select``, then
                             ``np.argpartition`` top-k
  scan_select_32_together    32 distinct query sets in one ``scan_select`` call
  scan_select_32_single      the same 32 in 32 calls
  raw_numpy_32_single        the same 32 as 32 raw numpy scans

The report's ``sections.search`` has the keys of the ``search`` section of
``bench/results/service.json`` (written by ``bench/service.py`` before it was split).

Usage (from the repository root; the demo datastore is built by ``./run demo``):
  python -m bench.search_scan --datastore data/demo/<tag>/run-<key>/datastores/bigbench \
      --model-dir data/smollm2-135m-instruct --targets-dir data/demo/<tag>/splits/targets \
      --out bench/results/search_scan.json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from bench._service_common import (
    ServiceSetup,
    add_concurrency_arg,
    q_parts_of,
    raw_scan,
    run_measurement,
    service_parser,
    stats,
    timed_ms,
)
from less_core.search import DEFAULT_BLOCK_ROWS, QuerySet, scan_select

BENCHMARK = "search_scan"
SECTION = "search"  # its name in bench/service.py's report, kept for the same keys


def measure(s: ServiceSetup, ns: argparse.Namespace) -> dict[str, Any]:
    """Time every variant ``--repeats`` times, interleaved; check both scans find the same rows."""
    dev, nq = s.device, ns.concurrency
    one_idx, one_k = s.requests.make(ns.search_targets, one_task=True)  # one subtask: a matvec
    one = QuerySet(s.queries(one_idx), one_k)
    one_parts = q_parts_of(one.queries, len(s.names))
    many = []
    for _ in range(nq):
        idx, k = s.requests.make(ns.search_targets)
        many.append(QuerySet(s.queries(idx), k))
    many_parts = [q_parts_of(qs.queries, len(s.names)) for qs in many]

    variants = {
        "scan_select_1": lambda: scan_select(s.features, [one], device=dev),
        "raw_numpy_1": lambda: raw_scan(s.features, one_parts, one.k),
        f"scan_select_{nq}_together": lambda: scan_select(s.features, many, device=dev),
        f"scan_select_{nq}_single": lambda: [
            scan_select(s.features, [qs], device=dev) for qs in many
        ],
        f"raw_numpy_{nq}_single": lambda: [
            raw_scan(s.features, p, qs.k) for p, qs in zip(many_parts, many)
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
    for rep in range(ns.repeats):  # a rotating order, so no variant always runs first
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


def judge(
    ratios: dict[str, float], ns: argparse.Namespace, device: torch.device
) -> tuple[dict[str, float], dict[str, bool]]:
    """Search within 1.5x of the raw scan; 32 queries together at least 3x faster than singly."""
    nq = ns.concurrency
    bars = {"search_over_raw_numpy_max": 1.5, f"search_{nq}_single_over_together_min": 3.0}
    checks = {
        "search_within_1.5x_raw_scan": ratios["search_over_raw_numpy"]
        <= bars["search_over_raw_numpy_max"],
        "search_batched_3x": ratios[f"search_{nq}_single_over_together"]
        >= bars[f"search_{nq}_single_over_together_min"],
    }
    return bars, checks


def main(argv: list[str] | None = None) -> int:
    ap = service_parser(
        BENCHMARK, __doc__, repeats_help="timed repeats of each variant (p50/p95 over these)"
    )
    ap.add_argument(
        "--search-targets", type=int, default=4, help="targets behind each search query"
    )
    add_concurrency_arg(ap, help="query sets searched together")
    return run_measurement(BENCHMARK, ap, argv, SECTION, measure, judge)


if __name__ == "__main__":
    sys.exit(main())
