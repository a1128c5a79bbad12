"""Distributed featurization: `less-index build` on 1 and 2 torchrun ranks, same data and machine.

Setup (built in code, nothing downloaded): a small random Llama (``--hidden``/``--layers``) with
the character tokenizer of ``tests/tiny_llm.py``, a synthetic pool of ``--n`` rows (the generator
of ``tests/conftest.py``), a real LoRA warmup (``indexer.warmup``, 2 checkpoints). Then the same
build command, each run into a fresh datastore, repeats interleaved:

  ranks1        torchrun --nproc-per-node 1, all ``--threads`` in the one process (one shard: a
                world of one builds exactly as a plain ``less-index build``)
  ranks1_t1     the same with one thread (what one rank of ``ranks2`` gets)
  ranks2        torchrun --nproc-per-node 2, ``--threads / 2`` threads per rank; no --shard-rows,
                so each rank featurizes one contiguous slice of ``ceil(N / 2)`` rows
  single_same   a plain ``less-index build --shard-rows ceil(N / 2)`` with ``--threads / 2``
                threads: the single-process build with the layout (and BLAS threads) of ranks2

Throughput is rows x checkpoints per second of the featurize stage (the manifest's
``featurize_s/<checkpoint>``: for ranks2, the slowest rank per checkpoint) and per second of the
whole command (process start-up, model load, tokenize, publish included). Equality: ranks2 vs
single_same (same version name, feature bytes identical, max abs difference) and ranks2 vs ranks1
(one shard: other batches and padding; max abs difference, tolerance 1e-5).

Usage (from the repository root):
  python -m bench.distributed --out bench/results/distributed.json
"""

from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench._args import add_threads_arg, bench_parser, command_line, start
from bench.report import write_report
from indexer.config import WarmupConfig
from indexer.datastore import Datastore
from less_core.config import LoraSettings, TokenizationConfig
from tests.conftest import make_rows, write_jsonl
from tests.tiny_llm import tiny_tokenizer

log = logging.getLogger("bench.distributed")
REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5


def small_llm(path: Path, hidden: int, layers: int, seed: int) -> Path:
    """A random Llama with the character tokenizer, saved as a checkpoint directory."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 32),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_cmd(
    model: Path, pool: Path, warmup: Path, out: Path, ns, nproc: int | None, extra=()
) -> list[str]:
    """``less-index build`` under torchrun with ``nproc`` ranks, or plain when ``nproc`` is None."""
    launcher = (
        [sys.executable, "-m", "indexer.cli"]
        if nproc is None
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            "-m",
            "indexer.cli",
        ]
    )
    return [
        *launcher,
        "build",
        *("--model-dir", str(model), "--pool", str(pool), "--warmup-dir", str(warmup)),
        *("--out", str(out), "--device", "cpu", "--feature-dtype", "float32"),
        *("--proj-dim", str(ns.dim), "--batch-size", str(ns.batch_size)),
        *("--max-length", str(ns.max_length)),
        *extra,
    ]


def run_build(cmd: list[str], threads: int, out: Path) -> dict:
    """Run one build; its wall time and the featurize timings its manifest recorded."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    store = Datastore.open(out)
    timings = store.manifest.timings
    featurize = sum(timings[f"featurize_s/{c}"] for c in store.checkpoint_names)
    return {"wall_s": wall, "featurize_s": featurize, "version": store.version}


def features(root: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, list[bytes]]]:
    """ids, per checkpoint the (N, P) features, and the raw bytes of each shard's file."""
    store = Datastore.open(root)
    feats = {c: np.asarray(store.features(c)[:], np.float64) for c in store.checkpoint_names}
    raw = {
        c: [(store.shard_dir(s) / f"features/{c}.npy").read_bytes() for s in store.shards]
        for c in store.checkpoint_names
    }
    return store.ids, feats, raw


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser("distributed", __doc__)
    ap.add_argument("--n", type=int, default=200, help="pool rows")
    ap.add_argument("--hidden", type=int, default=256, help="hidden size of the random Llama")
    ap.add_argument("--layers", type=int, default=4, help="decoder layers")
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--dim", type=int, default=1024, help="projection dim")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2, help="runs per variant (min is reported)")
    add_threads_arg(ap, help="threads for the whole machine (default: all cores)")
    ap.add_argument("--work-dir", default=None, help="keep the model and builds here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/distributed.json")
    ns = ap.parse_args(argv)
    start(ns)
    threads = ns.threads or os.cpu_count() or 1
    load_before = os.getloadavg()
    work = Path(ns.work_dir or tempfile.mkdtemp(prefix="bench-distributed-"))
    work.mkdir(parents=True, exist_ok=True)

    from indexer.warmup import run_warmup

    model = small_llm(work / "model", ns.hidden, ns.layers, ns.seed)
    pool = write_jsonl(work / "pool.jsonl", make_rows(math.ceil(ns.n / 4), ns.seed, "b-")[: ns.n])
    lora = LoraSettings(
        rank=ns.lora_rank, alpha=4 * ns.lora_rank, dropout=0.0, target_modules=("q_proj", "v_proj")
    )
    warmup_config = WarmupConfig(
        fraction=0.1, epochs=2, learning_rate=1e-3, batch_size=2, gradient_accumulation=2
    )
    t0 = time.perf_counter()
    warmup = work / "warmup"
    if not (warmup / "warmup.json").is_file():
        run_warmup(model, pool, warmup, lora, warmup_config, TokenizationConfig(ns.max_length))
    log.info("model, pool and warmup ready in %.1f s (%s)", time.perf_counter() - t0, work)

    n_half = math.ceil(ns.n / 2)
    per_rank = max(1, threads // 2)
    variants = {
        "ranks1": (1, threads, ()),
        "ranks1_t1": (1, 1, ()),
        "ranks2": (2, per_rank, ()),
        "single_same": (None, per_rank, ("--shard-rows", str(n_half))),
    }
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for rep in range(ns.repeats):
        for name, (nproc, t, extra) in variants.items():  # interleaved: noise hits all alike
            out = work / "builds" / f"{name}-{rep}"
            shutil.rmtree(out, ignore_errors=True)
            runs[name].append(
                run_build(build_cmd(model, pool, warmup, out, ns, nproc, extra), t, out)
            )
            log.info("%s run %d: %s", name, rep, runs[name][-1])

    store = Datastore.open(work / "builds" / "ranks2-0")
    n, n_ckpt = store.n, len(store.checkpoint_names)
    results = {}
    for name, rs in runs.items():
        nproc, t, extra = variants[name]
        best_f, best_w = min(r["featurize_s"] for r in rs), min(r["wall_s"] for r in rs)
        results[name] = {
            "ranks": nproc or 1,
            "torchrun": nproc is not None,
            "threads_per_process": t,
            "extra_flags": list(extra),
            "featurize_s": [r["featurize_s"] for r in rs],
            "wall_s": [r["wall_s"] for r in rs],
            "featurize_rows_per_s": n * n_ckpt / best_f,
            "end_to_end_rows_per_s": n * n_ckpt / best_w,
            "version": rs[0]["version"],
        }

    ids2, f2, raw2 = features(work / "builds" / "ranks2-0")
    ids_same, f_same, raw_same = features(work / "builds" / "single_same-0")
    ids1, f1, _ = features(work / "builds" / "ranks1-0")
    equality = {
        "ranks2_vs_single_same": {
            "same_version": results["ranks2"]["version"] == results["single_same"]["version"],
            "same_ids": ids2 == ids_same,
            "bit_identical": all(raw2[c] == raw_same[c] for c in raw2),
            "max_abs_diff": max(float(np.abs(f2[c] - f_same[c]).max()) for c in f2),
        },
        "ranks2_vs_ranks1_one_shard": {
            "same_ids": ids2 == ids1,
            "max_abs_diff": max(float(np.abs(f2[c] - f1[c]).max()) for c in f2),
            "tolerance": TOLERANCE,
        },
        "ranks2_repeats_bit_identical": all(
            features(work / "builds" / f"ranks2-{r}")[2] == raw2 for r in range(1, ns.repeats)
        ),
    }
    equality["ranks2_vs_ranks1_one_shard"]["within_tolerance"] = (
        equality["ranks2_vs_ranks1_one_shard"]["max_abs_diff"] <= TOLERANCE
    )

    def ratio(a: str, b: str, key: str) -> float:
        return results[a][key] / results[b][key]

    ratios = {
        "featurize_ranks2_over_ranks1": ratio("ranks2", "ranks1", "featurize_rows_per_s"),
        "featurize_ranks2_over_ranks1_t1": ratio("ranks2", "ranks1_t1", "featurize_rows_per_s"),
        "end_to_end_ranks2_over_ranks1": ratio("ranks2", "ranks1", "end_to_end_rows_per_s"),
        "featurize_ranks2_over_single_same": ratio("ranks2", "single_same", "featurize_rows_per_s"),
    }
    report = {
        "benchmark": "distributed",
        "command": command_line(ap, argv),
        "machine": {
            "platform": platform.platform(),
            "cpu_cores": os.cpu_count(),
            "threads": threads,
            "device": "cpu",
            "backend": "gloo",
            "torch": torch.__version__,
            # Shared machine: other processes' load slows multi-threaded runs most.
            "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        },
        "setup": {
            "model": {"hidden": ns.hidden, "layers": ns.layers, "random_init_seed": ns.seed},
            "lora": lora.to_dict(),
            "n": n,
            "checkpoints": store.checkpoint_names,
            "dim": ns.dim,
            "batch_size": ns.batch_size,
            "max_length": ns.max_length,
            "repeats": ns.repeats,
            "ranks2_shard_rows": store.manifest.build.shard_rows,
            "throughput": "rows x checkpoints per second (featurize stage: manifest timings, "
            "slowest rank; end to end: wall time of the command incl. start-up)",
        },
        "results": results,
        "ratios": ratios,
        "equality": equality,
    }
    write_report(report, ns.out, summary={"ratios": ratios, "equality": equality})
    if not ns.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
