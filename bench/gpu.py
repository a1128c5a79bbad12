"""GPU check: featurizing vs its floor, exact search on the GPU, whole requests batched vs single.

Three sections, each written into the report as soon as it is measured (a run cut short still
leaves the sections it finished):

  featurize  per model config (SmolLM2-135M-sized and ~1B-sized Llama, random weights built in
             code, float32, LoRA via peft with the project's settings, ``less_core.lora``):
               floor               plain batched forward+backward, LM head at response positions
                                   only (``response_losses(...).sum().backward()``, the body of
                                   ``bench.select_latency.bare_forward_backward``)
               floor_full_lm_head  the same with HF's ``model(..., labels=...).loss.backward()``
                                   (the floor of ``bench.featurize``: LM head at every position)
               ours/<kind>         ``Featurizer`` (per-example LoRA gradients, Adam step from a
                                   synthetic ``AdamState`` of the right shapes, projection to P)
               floor_bf16,         the floor and ours under ``torch.autocast`` bf16, as the
               ours_bf16/sjlt      library offers it (``PerExampleGradients(autocast=)``, set by
                                   ``BuildConfig.autocast``); ``--autocast none`` skips them
             on the same synthetic length-sorted batches with a response mask; examples/s,
             tokens/s and the ratio to the floor (bar: <= 1.5x).
  search     ``scan_select`` over N x P float16 features held on the device as one torch tensor
             (default 1,000,000 x 8192 = 16 GB): 1 query, 32 query sets together and the same 32
             one by one, against a raw scan (on CUDA: one fp16 ``F @ Q`` and ``torch.topk``; on
             a CPU: ``bench._service_common.raw_scan``); one query at k = 5 % as well; then the
             CPU equivalent at a small size for reference (numpy float16, ``raw_scan``).
  requests   ``bench.select_latency.measure`` as is, on a tiny datastore built in code the way
             ``tests/conftest.py`` builds its fixture (tiny Llama, warmup, build_tiny_datastore):
             ``QueryEngine.select`` vs bare forward+backward + raw scan, and ``select_many`` of
             32 distinct requests vs 32 ``select`` calls (bar on a GPU: >= 3x).

Timing: every variant is warmed first, ``torch.cuda.synchronize`` brackets each timed call
(``bench._service_common.timed_ms``), repeats are interleaved in a rotating order and the
median is reported. ``--quick`` shrinks every size (CPU smoke test of the whole script).

Usage (from the repository root; on the GPU machine through ``bash bench/gpu_check.sh``, which
also provides the packages that machine lacks):
  python -m bench.gpu                                   # --device cuda, bench/results/gpu.json
  python -m bench.gpu --device cpu --quick --out /tmp/gpu_cpu.json   # CPU smoke test, < 2 min
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench._args import bench_parser, command_line, start
from bench._service_common import raw_scan, stats, sync, timed_ms
from bench.featurize import synthetic_adam_state
from bench.report import write_report
from indexer.config import BuildConfig
from less_core.config import LoraSettings, ProjectionConfig
from less_core.data import IGNORE_INDEX, Batch, TokenizedExample, collate
from less_core.featurize import Featurizer
from less_core.lora import attach_lora
from less_core.lora_grads import PerExampleGradients, response_losses
from less_core.projectors import make_projector
from less_core.search import DEFAULT_BLOCK_ROWS, QuerySet, scan_select

log = logging.getLogger("bench.gpu")

BENCHMARK = "gpu"
PAD_ID = 0
FIRST_TOKEN = 3  # synthetic ids avoid the first few (special) ids

# Llama configs of the two model sizes; weights are random (they do not change throughput).
MODELS: dict[str, dict[str, Any]] = {
    # HuggingFaceTB/SmolLM2-135M(-Instruct): 576 hidden, 30 layers, 9/3 heads, tied embeddings.
    "smollm2-135m": dict(
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    # Llama-3.2-1B shape: 2048 hidden, 16 layers, 32/8 heads, 128256 vocab, tied embeddings.
    "llama-1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
}
# --quick: the same architecture family, a few layers and a small vocabulary.
QUICK_MODELS: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=4096,
        tie_word_embeddings=True,
    ),
    "llama-1b": dict(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        vocab_size=8192,
        tie_word_embeddings=True,
    ),
}
# Examples and batch size per model (full run; --quick uses QUICK_FEATURIZE for both).
FEATURIZE_SIZES = {"smollm2-135m": (48, 16), "llama-1b": (16, 8)}
QUICK_FEATURIZE = (8, 4)


# --------------------------------------------------------------------------- helpers


def median_ms(xs: list[float]) -> float:
    return stats(xs)["p50"]


def interleaved(
    variants: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Milliseconds of each variant over ``repeats`` rounds, in a rotating order."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            times[name].append(timed_ms(variants[name], device)[0])
    return times


def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_memory_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def machine(device: torch.device) -> dict[str, Any]:
    """Device, library versions and every numerics switch that changes speed."""
    import peft
    import transformers

    info: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "numpy": np.__version__,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda_matmul_allow_fp16_reduced_precision_reduction": (
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
        ),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_memory_gb"] = props.total_memory / 2**30
        info["device_multiprocessors"] = props.multi_processor_count
        info["cudnn"] = torch.backends.cudnn.version()
    return info


# --------------------------------------------------------------------------- featurize


def synthetic_tokens(n: int, max_length: int, vocab: int, seed: int) -> list[TokenizedExample]:
    """Random token ids of length in [max_length/2, max_length]; the last 20-60 % is response."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(max(4, max_length // 2), max_length)
        n_resp = max(2, int(length * rng.uniform(0.2, 0.6)))
        ids = [rng.randrange(FIRST_TOKEN, vocab) for _ in range(length)]
        labels = [IGNORE_INDEX] * (length - n_resp) + ids[length - n_resp :]
        out.append(TokenizedExample(ids, labels))
    return out


def random_lora_llama(spec: dict[str, Any], lora: LoraSettings, max_length: int, seed: int, dev):
    """A randomly initialised Llama with fresh LoRA adapters, on ``dev``, float32, eval mode.

    ``indexer.model_io.load_lora_model`` is ``attach_lora(load_base_model(dir)).eval()``: the
    same here with the base model built in code instead of read from a directory. The adapter
    is given random weights as in ``bench.featurize`` (B = 0 would zero all A gradients).
    """
    torch.manual_seed(seed)
    config = LlamaConfig(**spec, max_position_embeddings=max(2048, max_length), pad_token_id=PAD_ID)
    with torch.device(dev):  # initialise on the device: a 1B model in seconds, not a minute
        base = LlamaForCausalLM(config)
    model = attach_lora(base.to(dev), lora).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    return model, config


def measure_featurize(name: str, ns: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    spec = (QUICK_MODELS if ns.quick else MODELS)[name]
    n, batch_size = QUICK_FEATURIZE if ns.quick else FEATURIZE_SIZES[name]
    n = ns.featurize_n or n
    batch_size = ns.batch_size or batch_size
    lora = LoraSettings(rank=ns.lora_rank, alpha=4.0 * ns.lora_rank)  # paper: r128, a512, q/k/v/o
    t_build = time.perf_counter()
    model, config = random_lora_llama(spec, lora, ns.max_length, ns.seed, dev)
    toks = synthetic_tokens(n, ns.max_length, spec["vocab_size"], ns.seed)
    toks.sort(key=lambda t: len(t.input_ids))  # every variant uses the same sorted batches
    batches: list[Batch] = [
        collate(toks[i : i + batch_size], PAD_ID).to(dev) for i in range(0, len(toks), batch_size)
    ]
    adam = synthetic_adam_state(model, ns.seed)
    grads = PerExampleGradients(model)
    build_s = time.perf_counter() - t_build
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "featurize %s: %.0fM params, LoRA d=%d, %d examples in %d batches, P=%d",
        name,
        n_params / 1e6,
        grads.layout.total,
        len(toks),
        len(batches),
        ns.dim,
    )

    def floor(bs: list[Batch]) -> None:
        for b in bs:
            model.zero_grad(set_to_none=True)
            response_losses(model, b).sum().backward()
        model.zero_grad(set_to_none=True)

    def floor_full_lm_head(bs: list[Batch]) -> None:
        for b in bs:
            model.zero_grad(set_to_none=True)
            model(
                input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels
            ).loss.backward()
        model.zero_grad(set_to_none=True)

    # Mixed precision as the library offers it (BuildConfig.autocast -> PerExampleGradients):
    # the floor gets the same autocast around its forward and backward.
    half = BuildConfig(autocast=ns.autocast).autocast_dtype

    def floor_autocast(bs: list[Batch]) -> None:
        with torch.autocast(dev.type, half):
            floor(bs)

    runs: dict[str, Callable[[list[Batch]], object]] = {
        "floor": floor,
        "floor_full_lm_head": floor_full_lm_head,
    }
    projection = {}
    projectors = {}
    for kind in ns.kinds.split(","):
        pc = ProjectionConfig(kind=kind, dim=ns.dim, dense_cache_mb=ns.dense_cache_mb)
        projection[kind] = pc.to_dict()
        projectors[kind] = make_projector(pc, grads.layout)
        f = Featurizer(grads, projectors[kind], adam)
        runs[f"ours/{kind}"] = lambda bs, f=f: [f(b) for b in bs]
    if half is not None:
        runs[f"floor_{ns.autocast}"] = floor_autocast
        grads_half = PerExampleGradients(model, half)
        for kind in ns.autocast_kinds.split(","):
            if kind not in projectors:
                pc = ProjectionConfig(kind=kind, dim=ns.dim, dense_cache_mb=ns.dense_cache_mb)
                projectors[kind] = make_projector(pc, grads.layout)
            f = Featurizer(grads_half, projectors[kind], adam)
            runs[f"ours_{ns.autocast}/{kind}"] = lambda bs, f=f: [f(b) for b in bs]

    # Warm each variant on the shortest and the longest batch (allocator, cuBLAS/cuSPARSE
    # handles, projector caches, kernels for both ends of the shapes) and read its peak memory.
    warm = [batches[0], batches[-1]] if len(batches) > 1 else batches
    peak_gb, warm_ms = {}, {}
    for vname, fn in runs.items():
        reset_peak(dev)
        warm_ms[vname] = timed_ms(lambda fn=fn: fn(warm), dev)[0]
        peak_gb[vname] = peak_memory_gb(dev)
    # The dense projector regenerates its P x d matrix for every batch (it cannot be kept: 480 GB
    # at d = 14.7M, P = 8192), which can take seconds a batch: fewer rounds when all would not
    # fit the model's time budget (the warm-up pass measured one round's cost).
    round_s = sum(warm_ms.values()) / 1000 * len(batches) / len(warm)
    repeats = ns.repeats
    if round_s * repeats > ns.featurize_budget_s:
        repeats = max(1, int(ns.featurize_budget_s // round_s))
        log.info("featurize %s: %d rounds (one takes ~%.0f s)", name, repeats, round_s)
    variants = {vname: (lambda fn=fn: fn(batches)) for vname, fn in runs.items()}
    times = interleaved(variants, repeats, dev)

    n_tokens = sum(len(t.input_ids) for t in toks)
    n_resp = sum(t.n_response_tokens for t in toks)
    results = {}
    for vname, ms in times.items():
        s = median_ms(ms) / 1000
        results[vname] = {
            "ms": ms,
            "median_s": s,
            "examples_per_s": len(toks) / s,
            "tokens_per_s": n_tokens / s,
            "warmup_ms_first_last_batch": warm_ms[vname],
            "peak_memory_gb_first_last_batch": peak_gb[vname],
        }
    floor_s = results["floor"]["median_s"]
    ratios = {
        f"ours_{k.split('/')[1]}_over_floor": r["median_s"] / floor_s
        for k, r in results.items()
        if k.startswith("ours/")
    }
    ratios["floor_full_lm_head_over_floor"] = results["floor_full_lm_head"]["median_s"] / floor_s
    if half is not None:  # against the floor of the same precision, and against float32
        half_floor_s = results[f"floor_{ns.autocast}"]["median_s"]
        for k, r in results.items():
            if k.startswith(f"ours_{ns.autocast}/"):
                kind = k.split("/")[1]
                ratios[f"ours_{ns.autocast}_{kind}_over_floor_{ns.autocast}"] = (
                    r["median_s"] / half_floor_s
                )
                ratios[f"ours_{ns.autocast}_{kind}_over_floor"] = r["median_s"] / floor_s
        ratios[f"floor_{ns.autocast}_over_floor"] = half_floor_s / floor_s
    setup = {
        "model_config": {**spec, "max_position_embeddings": config.max_position_embeddings},
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "dtype": str(next(model.parameters()).dtype),
        "autocast": ns.autocast,
        "params": n_params,
        "lora": lora.to_dict(),
        "lora_params": grads.layout.total,
        "lora_modules": len(grads.layout.names),
        "projection": projection,
        "adam": {"betas": list(adam.betas), "eps": adam.eps, "synthetic": True},
        "n": len(toks),
        "batch_size": batch_size,
        "batches": len(batches),
        "max_length": ns.max_length,
        "tokens": n_tokens,
        "response_tokens": n_resp,
        "padded_tokens": sum(b.input_ids.numel() for b in batches),
        "repeats": repeats,
        "repeats_asked": ns.repeats,
        "budget_s": ns.featurize_budget_s,
        "build_s": build_s,
    }
    return {"setup": setup, "results": results, "ratios": ratios}


# --------------------------------------------------------------------------- search


def unit_rows(
    n: int, p: int, dtype: torch.dtype, device: torch.device, seed: int, chunk: int = 65536
) -> torch.Tensor:
    """(n, p) random unit rows (like stored L2-normalized features), generated chunk by chunk."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(n, p, dtype=dtype, device=device)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        x = torch.randn(r1 - r0, p, generator=g, device=device)
        out[r0:r1] = x / x.norm(dim=1, keepdim=True)
    return out


def query_sets(n: int, p: int, k: int, seed: int, max_subtasks: int = 4) -> list[QuerySet]:
    """``n`` query sets of 1..max_subtasks unit query rows (CPU float32, as the engine passes)."""
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = torch.randn(rng.randint(1, max_subtasks), p, generator=g)
        out.append(QuerySet(q / q.norm(dim=1, keepdim=True), k))
    return out


def raw_torch_scan(features: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """The floor on a GPU: one fp16 ``F @ Q`` over the whole matrix, max over subtasks, topk."""
    q = queries.to(features.device, features.dtype).T.contiguous()  # (P, S)
    scores = features @ q  # (N, S)
    agg = scores[:, 0] if scores.shape[1] == 1 else scores.amax(dim=1)
    return torch.topk(agg.float(), k).indices.cpu()


def q_parts(queries: torch.Tensor) -> list[np.ndarray]:
    """One checkpoint's (P, S) float32 query block for ``raw_scan``."""
    return [np.ascontiguousarray(queries.numpy().astype(np.float32).T)]


def overlap(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    sa, sb = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
    return len(sa & sb) / max(1, len(sa))


def search_variants(
    features: Any,
    one: QuerySet,
    many: list[QuerySet],
    dev: torch.device,
    raw: Callable,
    singles: bool = True,
) -> dict[str, Callable[[], object]]:
    nq = len(many)
    variants: dict[str, Callable[[], object]] = {
        "scan_select_1": lambda: scan_select([features], [one], device=dev),
        "raw_1": lambda: raw(one),
        f"scan_select_{nq}_together": lambda: scan_select([features], many, device=dev),
    }
    if singles:
        variants[f"scan_select_{nq}_single"] = lambda: [
            scan_select([features], [q], device=dev) for q in many
        ]
        variants[f"raw_{nq}_single"] = lambda: [raw(q) for q in many]
    return variants


def search_ratios(p50: dict[str, float], nq: int) -> dict[str, float]:
    out = {"search_over_raw": p50["scan_select_1"] / p50["raw_1"]}
    if f"scan_select_{nq}_single" in p50:
        together = p50[f"scan_select_{nq}_together"]
        out[f"search_{nq}_single_over_together"] = p50[f"scan_select_{nq}_single"] / together
        out[f"raw_{nq}_single_over_search_{nq}_together"] = p50[f"raw_{nq}_single"] / together
    return out


def search_on_device(
    ns: argparse.Namespace, dev: torch.device, one: QuerySet, many: list[QuerySet]
) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """N x P float16 features as one tensor on ``dev``: scan_select vs the raw scan."""
    n, p, nq = (ns.search_n or (8192 if ns.quick else 1_000_000)), ns.search_dim, len(many)
    k_large = max(1, round(0.05 * n))
    t0 = time.perf_counter()
    features = unit_rows(n, p, torch.float16, dev, ns.seed)
    sync(dev)
    gen_s = time.perf_counter() - t0
    if dev.type == "cuda":
        raw_kind = "torch fp16 F @ Q over the whole tensor + torch.topk, on the device"

        def raw(qs: QuerySet) -> Any:
            return raw_torch_scan(features, qs.queries, qs.k)
    else:
        raw_kind = "bench._service_common.raw_scan (numpy float32 blocks + argpartition)"
        view = features.numpy()

        def raw(qs: QuerySet) -> Any:
            return raw_scan([view], q_parts(qs.queries), qs.k)

    variants = search_variants(features, one, many, dev, raw)
    # Warm every variant; check scan_select and the raw scan find the same top-k.
    agree = overlap(variants["scan_select_1"]()[0].rows, variants["raw_1"]())
    for name in list(variants)[2:]:
        variants[name]()
    times = interleaved(variants, ns.search_repeats, dev)
    # k = 5 % of the pool (the service's default): the running top-k merge grows with k.
    big = QuerySet(one.queries, k_large)
    times.update(
        interleaved(
            {
                "scan_select_1_k5pct": lambda: scan_select([features], [big], device=dev),
                "raw_1_k5pct": lambda: raw(big),
            },
            3,  # the first round is the warm-up, dropped below
            dev,
        )
    )
    for name in ("scan_select_1_k5pct", "raw_1_k5pct"):
        times[name] = times[name][1:]
    res = {name: {"ms": t, **stats(t)} for name, t in times.items()}
    p50 = {name: r["p50"] for name, r in res.items()}
    ratios = search_ratios(p50, nq)
    ratios["search_over_raw_k5pct"] = p50["scan_select_1_k5pct"] / p50["raw_1_k5pct"]
    setup = {
        "n": n,
        "dim": p,
        "dtype": "float16",
        "bytes_gb": features.numel() * features.element_size() / 1e9,
        "held_on": str(features.device),
        "generate_s": gen_s,
        "k": one.k,
        "k_large": k_large,
        "block_rows": DEFAULT_BLOCK_ROWS,
        "batch_query_sets": nq,
        "batch_subtasks": [int(q.queries.shape[0]) for q in many],
        "raw": raw_kind,
        "topk_overlap_scan_select_vs_raw": agree,
        "repeats": ns.search_repeats,
    }
    return res, ratios, setup


def search_cpu_reference(
    ns: argparse.Namespace, one: QuerySet, many: list[QuerySet]
) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """1 query and 32 together over a small numpy float16 matrix on the CPU (no singles)."""
    n = ns.cpu_search_n or (4096 if ns.quick else 16_384)
    p, cpu = ns.search_dim, torch.device("cpu")
    features = unit_rows(n, p, torch.float16, cpu, ns.seed).numpy()

    def raw(qs: QuerySet) -> Any:
        return raw_scan([features], q_parts(qs.queries), qs.k)

    variants = search_variants(features, one, many, cpu, raw, singles=False)
    agree = overlap(variants["scan_select_1"]()[0].rows, variants["raw_1"]())
    times = interleaved(variants, max(2, ns.search_repeats // 2), cpu)
    res = {name: {"ms": t, **stats(t)} for name, t in times.items()}
    ratios = search_ratios({name: r["p50"] for name, r in res.items()}, len(many))
    setup = {
        "n": n,
        "dim": p,
        "dtype": "float16 (numpy)",
        "k": one.k,
        "raw": "bench._service_common.raw_scan",
        "topk_overlap_scan_select_vs_raw": agree,
        "cpu_threads": torch.get_num_threads(),
    }
    return res, ratios, setup


def measure_search(ns: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    one = query_sets(1, ns.search_dim, ns.k, ns.seed + 1, max_subtasks=1)[0]
    many = query_sets(ns.concurrency, ns.search_dim, ns.k, ns.seed + 2)
    res, ratios, setup = search_on_device(ns, dev, one, many)
    free_device_memory(dev)  # the 16 GB tensor went with search_on_device's frame
    cpu_res, cpu_ratios, cpu_setup = search_cpu_reference(ns, one, many)
    return {
        "setup": {"device": setup, "cpu_reference": cpu_setup},
        "results": {"device": res, "cpu_reference": cpu_res},
        "ratios": {**ratios, **{f"cpu_{key}": v for key, v in cpu_ratios.items()}},
    }


# --------------------------------------------------------------------------- requests


def tiny_datastore(
    work: Path, ns: argparse.Namespace, dev: torch.device
) -> tuple[Path, Path, Path]:
    """(datastore root, model dir, targets dir): ``tests/conftest.py``'s fixture path.

    The tiny Llama, the synthetic BIG-bench-like pool, a real warmup and
    ``tests.conftest.build_tiny_datastore`` (the fixtures' build: exact search, no FAISS); only
    the pool size differs. The build picks its device itself (CUDA when there is one).
    """
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
    pool = write_jsonl(work / "pool.jsonl", make_rows(ns.pool_per_task, seed=1, prefix="p-"))
    warmup = run_warmup(model_dir, pool, work / "warmup", LORA, WARMUP, TOKENS, device=str(dev))
    root = build_tiny_datastore(work / "ds", model_dir, pool, warmup)
    targets_dir = work / "targets"
    targets_dir.mkdir()
    by_task: dict[str, list[dict]] = {}
    for row in make_rows(ns.targets_per_task, seed=2, prefix="t-"):
        by_task.setdefault(row["task"], []).append(row)
    for task, rows in by_task.items():  # one file per task: its stem is the subtask
        write_jsonl(targets_dir / f"{task}.jsonl", rows)
    return root, model_dir, targets_dir


def measure_requests(ns: argparse.Namespace, dev: torch.device) -> dict[str, Any]:
    from bench import select_latency
    from bench._service_common import ServiceSetup

    with tempfile.TemporaryDirectory(prefix="less-gpu-") as tmp:
        t0 = time.perf_counter()
        root, model_dir, targets_dir = tiny_datastore(Path(tmp), ns, dev)
        build_s = time.perf_counter() - t0
        sl = argparse.Namespace(  # the flags of `python -m bench.select_latency`
            datastore=str(root),
            model_dir=str(model_dir),
            targets_dir=str(targets_dir),
            device=str(dev),
            k=None,
            seed=ns.seed,
            repeats=ns.request_repeats,
            targets_per_request=[4, 8],
            concurrency=ns.concurrency,
            concurrency_targets=4,
            batch_rounds=ns.batch_rounds,
            threads=None,
        )
        setup = ServiceSetup(sl)
        section = select_latency.measure(setup, sl)
        bars, checks = select_latency.judge(section["ratios"], sl, setup.device)
        described = setup.report(sl)
        for key in ("datastore", "model_dir", "targets_dir"):  # temporary paths
            described[key] = f"<tmp>/{Path(described[key]).name}"
    section["setup"] = {
        **section["setup"],
        "datastore": described,
        "pool_rows_per_task": ns.pool_per_task,
        "build_s": build_s,
        "built_with": "tests.conftest.build_tiny_datastore (the datastore_root fixture's build)",
    }
    section["bars"], section["checks"] = bars, checks
    return section


# --------------------------------------------------------------------------- main


def bars_and_checks(report: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """SPEC §5 bars on what was measured (featurize/search/request ratios)."""
    bars = {
        "ours_over_floor_max": 1.5,
        "sjlt_goal": 1.3,
        "search_over_raw_max": 1.5,
        "search_batched_min": 3.0,
        "requests_batched_min_on_gpu": 3.0,
    }
    checks: dict[str, bool] = {}
    for model, sec in report["sections"].get("featurize", {}).items():
        for key, r in sec["ratios"].items():
            # against the floor of the same precision only (not mixed vs float32)
            if key.startswith("ours_") and not re.fullmatch(r"ours_(bf16|fp16)_.*_over_floor", key):
                checks[f"featurize/{model}/{key}<=1.5"] = r <= bars["ours_over_floor_max"]
    search = report["sections"].get("search")
    if search:
        nq = report["settings"]["concurrency"]
        checks["search/search_over_raw<=1.5"] = (
            search["ratios"]["search_over_raw"] <= bars["search_over_raw_max"]
        )
        checks[f"search/search_{nq}_single_over_together>=3"] = (
            search["ratios"][f"search_{nq}_single_over_together"] >= bars["search_batched_min"]
        )
    requests = report["sections"].get("requests")
    if requests:
        checks.update({f"requests/{k}": v for k, v in requests["checks"].items()})
    return {"bars": bars, "checks": checks, "checks_device": str(device)}


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "device": report["machine"]["device"],
        "device_name": report["machine"]["device_name"],
        "elapsed_s": report.get("elapsed_s"),
        "featurize": {},
    }
    for model, sec in report["sections"].get("featurize", {}).items():
        out["featurize"][model] = {
            "examples_per_s": {k: round(r["examples_per_s"], 2) for k, r in sec["results"].items()},
            "tokens_per_s": {k: round(r["tokens_per_s"]) for k, r in sec["results"].items()},
            "ratios": sec["ratios"],
        }
    if "search" in report["sections"]:
        s = report["sections"]["search"]
        out["search_p50_ms"] = {
            where: {k: round(r["p50"], 2) for k, r in res.items()}
            for where, res in s["results"].items()
        }
        out["search_ratios"] = s["ratios"]
    if "requests" in report["sections"]:
        out["request_ratios"] = report["sections"]["requests"]["ratios"]
    out["checks"] = report.get("checks", {})
    out["errors"] = report.get("errors", {})
    return out


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    ap = bench_parser(BENCHMARK, __doc__)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="shrink every size (CPU smoke test)")
    ap.add_argument(
        "--out",
        default=None,
        help="report path (cuda: bench/results/gpu.json; cpu: <tmp>/less-gpu-check/gpu_cpu.json, "
        "so that CPU figures never land where GPU figures are expected)",
    )
    ap.add_argument("--sections", default="featurize,search,requests")
    ap.add_argument("--models", default="smollm2-135m,llama-1b", help=f"of {sorted(MODELS)}")
    ap.add_argument("--kinds", default="sjlt,rademacher", help="projector kinds for ours")
    ap.add_argument(
        "--autocast",
        default="bf16",
        choices=("none", "bf16", "fp16"),
        help="also time ours and the floor under this autocast (BuildConfig.autocast); none: skip",
    )
    ap.add_argument("--autocast-kinds", default="sjlt", help="projector kinds for those rows")
    ap.add_argument("--dim", type=int, default=None, help="projection dim P (8192; quick 512)")
    ap.add_argument("--dense-cache-mb", type=int, default=ProjectionConfig().dense_cache_mb)
    ap.add_argument("--lora-rank", type=int, default=None, help="alpha = 4 x rank (128; quick 8)")
    ap.add_argument("--max-length", type=int, default=None, help="tokens per example (512; 64)")
    ap.add_argument("--featurize-n", type=int, default=None, help="examples (default per model)")
    ap.add_argument("--batch-size", type=int, default=None, help="default per model")
    ap.add_argument("--repeats", type=int, default=None, help="featurize rounds (3; quick 2)")
    ap.add_argument(
        "--featurize-budget-s",
        type=float,
        default=45.0,
        help="seconds for one model's timed rounds: fewer rounds (at least 1) beyond it",
    )
    ap.add_argument(
        "--search-n", type=int, default=None, help="rows on the device (1,000,000; quick 8192)"
    )
    ap.add_argument("--search-dim", type=int, default=None, help="search P (8192; quick 512)")
    ap.add_argument(
        "--cpu-search-n", type=int, default=None, help="CPU reference rows (16,384; quick 4096)"
    )
    ap.add_argument("--search-repeats", type=int, default=None, help="(5; quick 2)")
    ap.add_argument("--k", type=int, default=1000, help="k of the search queries")
    ap.add_argument("--concurrency", type=int, default=32, help="queries / requests together")
    ap.add_argument("--pool-per-task", type=int, default=None, help="tiny pool rows per task")
    ap.add_argument("--targets-per-task", type=int, default=6)
    ap.add_argument("--request-repeats", type=int, default=None, help="(10; quick 2)")
    ap.add_argument("--batch-rounds", type=int, default=None, help="(3; quick 1)")
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(argv)
    q = ns.quick
    defaults = {
        "dim": 512 if q else 8192,
        "lora_rank": 8 if q else LoraSettings().rank,
        "max_length": 64 if q else 512,
        "repeats": 2 if q else 3,
        "search_dim": 512 if q else 8192,
        "search_repeats": 2 if q else 5,
        "pool_per_task": 8 if q else 64,
        "request_repeats": 2 if q else 10,
        "batch_rounds": 1 if q else 3,
    }
    for key, value in defaults.items():
        if getattr(ns, key) is None:
            setattr(ns, key, value)
    if ns.out is None:
        on_cuda = torch.device(ns.device).type == "cuda"
        tmp = Path(tempfile.gettempdir()) / "less-gpu-check" / "gpu_cpu.json"
        ns.out = "bench/results/gpu.json" if on_cuda else str(tmp)
    return ap, ns


def main(argv: list[str] | None = None) -> int:
    ap, ns = parse_args(argv)
    start(ns)
    dev = torch.device(ns.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("bench.gpu: no CUDA device (torch.cuda.is_available() is False); use --device cpu")
        return 2
    if dev.type == "cuda":
        if dev.index is None:  # torch.cuda.set_device needs an index
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev.index)
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": BENCHMARK,
        "command": command_line(ap, argv),
        "machine": machine(dev),
        "figures": "GPU"
        if dev.type == "cuda"
        else "CPU smoke test (--device cpu): not GPU figures, do not report them as such",
        "settings": {k: v for k, v in vars(ns).items()},
        "autocast": {
            "supported_by_library": True,
            "how": "PerExampleGradients(model, autocast=dtype), set by BuildConfig.autocast "
            "(none|bf16|fp16) and recorded in the manifest; loss, per-example einsum, Adam step "
            "and projection stay float32",
            "measured": ns.autocast,
        },
        "sections": {},
        "errors": {},
    }
    sections = ns.sections.split(",")

    def save() -> None:
        report["elapsed_s"] = time.perf_counter() - t_start
        report.update(bars_and_checks(report, dev))
        write_report(report, ns.out)

    def run(key: str, fn: Callable[[], dict[str, Any]], store: dict[str, Any], name: str) -> None:
        log.info("section %s", key)
        t0 = time.perf_counter()
        try:
            store[name] = {**fn(), "section_s": time.perf_counter() - t0}
        except Exception as exc:  # keep the other sections' figures; say what broke
            log.exception("section %s failed", key)
            report["errors"][key] = f"{type(exc).__name__}: {exc}"
        free_device_memory(dev)  # the section's models and tensors went with its frame
        save()

    if "featurize" in sections:
        feat: dict[str, Any] = report["sections"].setdefault("featurize", {})
        for name in ns.models.split(","):
            run(f"featurize/{name}", lambda name=name: measure_featurize(name, ns, dev), feat, name)
    if "search" in sections:
        run("search", lambda: measure_search(ns, dev), report["sections"], "search")
    if "requests" in sections:
        run("requests", lambda: measure_requests(ns, dev), report["sections"], "requests")
    save()
    print(json.dumps(summary_of(report), indent=2))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
