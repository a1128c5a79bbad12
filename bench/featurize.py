"""Featurization throughput, side by side in one run on the same model, data and machine.

Variants (seconds per example; ratios are what to read, this machine is shared and noisy):
  floor       the same work as ours minus gradient capture: a batched forward+backward over the
              same batches with the LM head at response positions only (the loss ours
              differentiates, ``less_core.lora_grads.response_losses``); ``floor_kind`` in the
              results says so ("response_positions")
  floor_hf    for reference only: HF's ``labels=`` loss, full-vocabulary logits at every position
  ours/<kind> batched per-example LoRA gradients, Adam step, per-module projection (each kind)
  reference   the LESS reference procedure (bench/reference_less.py): one example at a time,
              full-gradient flatten, TRAK BasicProjector regenerating Π on every call — on the
              SAME examples as ours, warmed up and repeated like ours
  ref_kept    the same one-at-a-time procedure with the dense matrix generated once and kept; run
              at the largest P whose d × P float32 matrix fits ``--kept-max-gb`` (``kept_dim``),
              next to ours at that same P (``ours_at_kept_dim/<kind>``) for a like-for-like ratio

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
from less_core.lora_grads import PerExampleGradients, response_losses
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


def largest_kept_dim(d: int, dim: int, max_gb: float) -> int | None:
    """The largest power-of-two P <= dim whose d × P float32 matrix fits in max_gb (None if
    not even P = 64 does): the size at which the kept-dense baseline can run at all."""
    p = dim
    while p >= 64:
        if d * p * 4 / 2**30 <= max_gb:
            return p
        p //= 2
    return None


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser("featurize", __doc__)
    add_model_args(ap, lora_layers=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--n", type=int, default=64, help="examples, the same for every variant")
    ap.add_argument(
        "--repeats", type=int, default=2, help="timed repeats of every variant (min is kept)"
    )
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
        # What ours does minus gradient capture: the response-position loss, backward.
        for b in batches:
            model.zero_grad()
            response_losses(model, b).sum().backward()

    def floor_hf():
        for b in batches:
            model.zero_grad()
            model(
                input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels
            ).loss.backward()

    kept_dim = largest_kept_dim(d, ns.dim, ns.kept_max_gb)
    kinds = ns.kinds.split(",")

    def featurizer(kind: str, dim: int) -> Featurizer:
        config = ProjectionConfig(kind=kind, dim=dim, dense_cache_mb=ns.dense_cache_mb)
        return Featurizer(grads, make_projector(config, grads.layout), adam)

    batched = {"floor": floor, "floor_hf": floor_hf}
    for kind in kinds:
        f = featurizer(kind, ns.dim)
        batched[f"ours/{kind}"] = lambda f=f: [f(b) for b in batches]
    if kept_dim is not None and kept_dim != ns.dim:
        for kind in kinds:
            f = featurizer(kind, kept_dim)
            batched[f"ours_at_kept_dim/{kind}"] = lambda f=f: [f(b) for b in batches]

    # The one-at-a-time variants run on the same examples as ours, in the same order.
    ref_toks = [(t.input_ids, t.labels) for t in toks]
    full_avg = torch.cat([adam.exp_avg[n] for n in grads.layout.names])
    full_sq = torch.cat([adam.exp_avg_sq[n] for n in grads.layout.names])
    moments = (full_avg, full_sq)
    trak = TrakBasicProjector(d, ns.dim, ns.seed)
    one_at_a_time = {"reference": lambda: reference_featurize(model, ref_toks, moments, trak)}
    kept_generation_s = None
    if kept_dim is not None:
        t_gen = time.perf_counter()
        kept = KeptDenseProjector(d, kept_dim, ns.seed)
        kept_generation_s = time.perf_counter() - t_gen
        one_at_a_time["ref_kept"] = lambda: reference_featurize(model, ref_toks, moments, kept)
    else:
        log.info("ref_kept skipped: no P fits --kept-max-gb %.1f", ns.kept_max_gb)

    # Warm every path once (allocator, projector caches, thread pools) on the first batch
    # (one example for the one-at-a-time variants).
    floor()
    floor_hf()
    for name, fn in batched.items():
        if name.startswith("ours"):
            fn()
    for name in one_at_a_time:
        projector = trak if name == "reference" else kept
        reference_featurize(model, ref_toks[:1], moments, projector)
    # Interleave repeats so that load from other processes hits every variant alike.
    results: dict[str, dict] = {}
    for _ in range(ns.repeats):
        for name, fn in {**batched, **one_at_a_time}.items():
            results.setdefault(name, {"s": []})["s"].append(timed(fn))
    for r in results.values():
        r["s_per_example"] = min(r["s"]) / len(toks)
    if kept_generation_s is not None:
        results["ref_kept"]["matrix_generation_s"] = kept_generation_s
        results["ref_kept"]["dim"] = kept_dim

    floor_s = results["floor"]["s_per_example"]
    ratios = {"hf_floor_over_floor": results["floor_hf"]["s_per_example"] / floor_s}
    for kind in kinds:
        ours = results[f"ours/{kind}"]["s_per_example"]
        ratios[f"ours_{kind}_over_floor"] = ours / floor_s
        ratios[f"ours_{kind}_over_hf_floor"] = ours / results["floor_hf"]["s_per_example"]
        ratios[f"reference_over_ours_{kind}"] = results["reference"]["s_per_example"] / ours
        if "ref_kept" in results:
            at_kept = results.get(f"ours_at_kept_dim/{kind}", results[f"ours/{kind}"])
            ratios[f"ref_kept_over_ours_{kind}_at_kept_dim"] = (
                results["ref_kept"]["s_per_example"] / at_kept["s_per_example"]
            )
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
            "repeats": ns.repeats,
            "batch_size": ns.batch_size,
            "max_length": ns.max_length,
            "mean_tokens": sum(len(t.input_ids) for t in toks) / len(toks),
            "padding_efficiency": sum(len(t.input_ids) for t in toks)
            / sum(b.input_ids.numel() for b in batches),
        },
        "floor_kind": "response_positions",
        "kept_dim": kept_dim,
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
