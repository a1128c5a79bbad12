"""In-process requests: ``QueryEngine.select`` vs its bare baseline; ``select_many`` vs singles.

  targets_<n>               ``QueryEngine.select`` with n targets (p50/p95, split into
                            gradient_ms and search_ms) vs the bare baseline: plain
                            forward+backward of the same pre-tokenized targets at each checkpoint
                            (same adapter swap, batches and length order as the engine) + the raw
                            numpy scan of ``bench._service_common.raw_scan``
  select_many_32            32 distinct requests in one ``select_many`` call
  select_32_one_by_one      the same 32 as 32 ``select`` calls

Every request is distinct (target subset and k). The report's ``sections.request`` has the keys of
the ``request`` section of ``bench/results/service.json`` (written by ``bench/service.py`` before
it was split).

Usage (from the repository root; the demo datastore is built by ``./run demo``):
  python -m bench.select_latency --datastore data/demo/<tag>/run-<key>/datastores/bigbench \
      --model-dir data/smollm2-135m-instruct --targets-dir data/demo/<tag>/splits/targets \
      --out bench/results/select_latency.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import torch
from peft import set_peft_model_state_dict

from bench._service_common import (
    ServiceSetup,
    add_concurrency_arg,
    add_concurrency_targets_arg,
    add_targets_per_request_arg,
    q_parts_of,
    raw_scan,
    run_measurement,
    service_parser,
    stats,
    timed_ms,
)
from indexer.query import QueryEngine
from less_core.config import SelectionConfig
from less_core.data import TokenizedExample, collate
from less_core.lora_grads import response_losses

BENCHMARK = "select_latency"
SECTION = "request"  # its name in bench/service.py's report, kept for the same keys


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


def measure(s: ServiceSetup, ns: argparse.Namespace) -> dict[str, Any]:
    """Select vs bare for each request size, then select_many vs one by one."""
    dev = s.device
    out: dict = {"results": {}, "ratios": {}}
    for nt in ns.targets_per_request:
        reqs = [s.requests.make(nt) for _ in range(ns.repeats + 1)]
        sel_ms, grad_ms, search_ms, fb_ms, scan_ms = [], [], [], [], []

        def ours(idx, k):
            ms, sel = timed_ms(
                lambda: s.engine.select([s.examples[i] for i in idx], SelectionConfig(k=k)),
                dev,
            )
            return ms, sel

        def bare(idx, k):
            toks = [s.toks[i] for i in idx]  # tokenized beforehand: not part of the baseline
            parts = q_parts_of(s.queries(idx), len(s.names))
            a, _ = timed_ms(lambda: bare_forward_backward(s.engine, toks, s.names), dev)
            b, _ = timed_ms(lambda: raw_scan(s.features, parts, k))
            return a, b

        ours(*reqs[0])  # warm both paths
        bare(*reqs[0])
        for rep, (idx, k) in enumerate(reqs[1:]):
            first_ours = rep % 2 == 0  # alternate which one runs first
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
        reqs = [s.requests.make(nt) for _ in range(nq)]
        pairs = [([s.examples[i] for i in idx], SelectionConfig(k=k)) for idx, k in reqs]
        # Both variants time whole requests: tokenizing (prepare), gradients and search.
        variants = {
            "many": lambda: s.engine.select_many([s.engine.prepare(e, c) for e, c in pairs]),
            "single": lambda: [s.engine.select(e, c) for e, c in pairs],
        }
        for name in ("many", "single") if rnd % 2 == 0 else ("single", "many"):
            ms, sels = timed_ms(variants[name], dev)
            runs[name]["ms"].append(ms)  # gradient/search: summed over the requests' shares
            runs[name]["gradient_ms"].append(sum(x.gradient_ms for x in sels))
            runs[name]["search_ms"].append(sum(x.search_ms for x in sels))
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


def judge(
    ratios: dict[str, float], ns: argparse.Namespace, device: torch.device
) -> tuple[dict[str, float], dict[str, bool]]:
    """Select within 1.5x of bare; on a GPU, select_many at least 3x faster than one by one."""
    nq = ns.concurrency
    bars = {"select_over_bare_max": 1.5, f"requests_{nq}_speedup_min_on_gpu": 3.0}
    checks = {
        f"select_{nt}_targets_within_1.5x_bare": ratios[f"select_over_bare_{nt}_targets"]
        <= bars["select_over_bare_max"]
        for nt in ns.targets_per_request
    }
    if device.type == "cuda":  # on a CPU the target gradients are the whole cost: no bar there
        key = f"requests_{nq}_one_by_one_over_select_many"
        checks[f"{key}_3x_gpu"] = ratios[key] >= bars[f"requests_{nq}_speedup_min_on_gpu"]
    return bars, checks


def main(argv: list[str] | None = None) -> int:
    ap = service_parser(
        BENCHMARK, __doc__, repeats_help="timed single requests per size (p50/p95 over these)"
    )
    add_targets_per_request_arg(ap)
    add_concurrency_arg(ap, help="requests in one select_many")
    add_concurrency_targets_arg(ap)
    ap.add_argument(
        "--batch-rounds", type=int, default=2, help="in-process select_many vs one-by-one rounds"
    )
    return run_measurement(BENCHMARK, ap, argv, SECTION, measure, judge)


if __name__ == "__main__":
    sys.exit(main())
