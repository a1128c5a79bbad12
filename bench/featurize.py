"""Featurization throughput, side by side in one run on the same model, data and machine.

Variants (seconds per example; ratios are what to read, this machine is shared and noisy):
  floor       plain batched forward+backward over the same batches, no gradient capture
  ours/<kind> batched per-example LoRA gradients, Adam step, per-module projection (each kind)
  reference   the LESS reference procedure (bench/reference_less.py): one example at a time,
              full-gradient flatten, TRAK BasicProjector regenerating Π on every call
  ref_kept    the same one-at-a-time procedure with the dense matrix generated once and kept

Usage (from the repository root):
  python -m bench.featurize --model-dir data/smollm2-135m-instruct \
      --pool data/bigbench/pool.jsonl --out bench/results/featurize.json
"""

from __future__ import annotations

import logging
import platform
import random
import sys
import time

import torch

from bench._args import (
    add_model_args,
    add_threads_arg,
    bench_parser,
    command_line,
    lora_settings,
    start,
)
from bench.reference_less import KeptDenseProjector, TrakBasicProjector, reference_featurize
from bench.report import write_report
from indexer.jsonl import iter_examples
from indexer.model_io import load_lora_model, load_tokenizer
from less_core.config import ProjectionConfig
from less_core.data import collate, tokenize_example
from less_core.featurize import Featurizer
from less_core.lora_grads import PerExampleGradients
from less_core.optimizer_state import AdamState
from less_core.projectors import make_projector

log = logging.getLogger("bench.featurize")


def synthetic_adam_state(model, seed: int) -> AdamState:
    """Adam moments of realistic magnitude for every LoRA weight (values do not affect speed)."""
    g = torch.Generator().manual_seed(seed)
    avg, avg_sq = {}, {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            avg[name] = torch.randn(p.numel(), generator=g) * 1e-4
            avg_sq[name] = torch.rand(p.numel(), generator=g) * 1e-7
    return AdamState(avg, avg_sq, (0.9, 0.999), 1e-8, step=100)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser("featurize", __doc__)
    add_model_args(ap, lora_layers=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--n", type=int, default=64, help="examples for the batched variants")
    ap.add_argument("--ref-n", type=int, default=32, help="examples for the one-at-a-time variants")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument(
        "--dim", type=int, default=2048, help="projection dim (ref_kept holds d x dim floats)"
    )
    ap.add_argument("--dense-cache-mb", type=int, default=4096)
    ap.add_argument(
        "--kept-max-gb",
        type=float,
        default=6.0,
        help="skip ref_kept when its d x dim float32 matrix would exceed this",
    )
    add_threads_arg(ap)
    ap.add_argument("--kinds", default="sjlt,rademacher", help="projector kinds to run for ours")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/featurize.json")
    ns = ap.parse_args(argv)
    start(ns)

    lora = lora_settings(ns)
    tokenizer = load_tokenizer(ns.model_dir)
    model = load_lora_model(ns.model_dir, lora, torch.device("cpu"))
    torch.manual_seed(ns.seed)
    with torch.no_grad():  # a trained-looking adapter: B = 0 would zero all A gradients
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    examples = list(iter_examples(ns.pool))
    random.Random(ns.seed).shuffle(examples)
    toks = [tokenize_example(tokenizer, e, ns.max_length) for e in examples[: ns.n]]
    toks = [t for t in toks if t.n_response_tokens > 0]
    toks.sort(key=lambda t: len(t.input_ids))  # both batched variants use the same sorted batches
    batches = [
        collate(toks[i : i + ns.batch_size], tokenizer.pad_token_id)
        for i in range(0, len(toks), ns.batch_size)
    ]
    adam = synthetic_adam_state(model, ns.seed)
    grads = PerExampleGradients(model)
    d = grads.layout.total
    log.info(
        "model %s, LoRA d=%d, %d examples (mean %d tokens), P=%d",
        ns.model_dir,
        d,
        len(toks),
        sum(len(t.input_ids) for t in toks) / len(toks),
        ns.dim,
    )

    def floor():
        for b in batches:
            model.zero_grad()
            model(
                input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels
            ).loss.backward()

    results: dict[str, dict] = {}
    kinds = ns.kinds.split(",")
    featurizers = {
        kind: Featurizer(
            grads,
            make_projector(
                ProjectionConfig(kind=kind, dim=ns.dim, dense_cache_mb=ns.dense_cache_mb),
                grads.layout,
            ),
            adam,
        )
        for kind in kinds
    }
    # Warm every path once (allocator, projector caches, thread pools) on the first batch.
    floor()
    for f in featurizers.values():
        f(batches[0])
    # Interleave repeats so that load from other processes hits every variant alike.
    for _ in range(2):
        results.setdefault("floor", {"s": []})["s"].append(timed(floor))
        for kind, f in featurizers.items():
            results.setdefault(f"ours/{kind}", {"s": []})["s"].append(
                timed(lambda f=f: [f(b) for b in batches])
            )
    for r in results.values():
        r["s_per_example"] = min(r["s"]) / len(toks)

    ref_toks = [(t.input_ids, t.labels) for t in toks[: ns.ref_n]]
    full_avg = torch.cat([adam.exp_avg[n] for n in grads.layout.names])
    full_sq = torch.cat([adam.exp_avg_sq[n] for n in grads.layout.names])
    trak = TrakBasicProjector(d, ns.dim, ns.seed)
    t_ref = timed(lambda: reference_featurize(model, ref_toks, (full_avg, full_sq), trak))
    results["reference"] = {"s": [t_ref], "s_per_example": t_ref / len(ref_toks)}
    kept_gb = d * ns.dim * 4 / 2**30
    if kept_gb <= ns.kept_max_gb:
        t_gen = time.perf_counter()
        kept = KeptDenseProjector(d, ns.dim, ns.seed)
        t_gen = time.perf_counter() - t_gen
        t_kept = timed(lambda: reference_featurize(model, ref_toks, (full_avg, full_sq), kept))
        results["ref_kept"] = {
            "s": [t_kept],
            "s_per_example": t_kept / len(ref_toks),
            "matrix_generation_s": t_gen,
        }
        del kept
    else:
        log.info(
            "ref_kept skipped: its matrix needs %.1f GB (> --kept-max-gb %.1f)",
            kept_gb,
            ns.kept_max_gb,
        )

    floor_s = results["floor"]["s_per_example"]
    ratios = {}
    for kind in featurizers:
        ours = results[f"ours/{kind}"]["s_per_example"]
        ratios[f"ours_{kind}_over_floor"] = ours / floor_s
        ratios[f"reference_over_ours_{kind}"] = results["reference"]["s_per_example"] / ours
        if "ref_kept" in results:
            ratios[f"ref_kept_over_ours_{kind}"] = results["ref_kept"]["s_per_example"] / ours
    report = {
        "benchmark": "featurize",
        "command": command_line(ap, argv),
        "machine": {
            "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "device": "cpu",
            "torch": torch.__version__,
        },
        "setup": {
            "model_dir": ns.model_dir,
            "lora": lora.to_dict(),
            "lora_params": d,
            "dim": ns.dim,
            "n": len(toks),
            "ref_n": len(ref_toks),
            "batch_size": ns.batch_size,
            "max_length": ns.max_length,
            "mean_tokens": sum(len(t.input_ids) for t in toks) / len(toks),
            "padding_efficiency": sum(len(t.input_ids) for t in toks)
            / sum(b.input_ids.numel() for b in batches),
        },
        "results": results,
        "ratios": ratios,
        "bars": {"ours_over_floor_max": 1.5, "sjlt_goal": 1.3, "reference_over_ours_min": 10.0},
    }
    write_report(
        report,
        ns.out,
        summary={
            "ratios": ratios,
            "s_per_example": {k: v["s_per_example"] for k, v in results.items()},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
