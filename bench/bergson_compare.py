"""Side-by-side comparison with EleutherAI's `bergson` gradient datastore: featurization
throughput and selection precision on the same model, LoRA adapter, optimizer state, data and
machine.

What runs:
  1. A seeded pool subset of ``--n`` examples containing every task (examples longer than
     ``--max-length`` tokens are left out of the draw, so neither tool truncates anything).
  2. One LoRA adapter (seeded, ``normal(0, 0.02)`` on A and B like bench/featurize.py, saved as a
     PEFT adapter) and one Adam state (synthetic moments, saved as a torch ``optimizer.pt``) that
     both tools load: bergson via ``--model <adapter>`` and ``--optimizer_state``, ours via
     ``load_adapter_weights`` / ``adam_state_from_state_dict``.
  3. bergson: ``bergson build`` on the pool subset and on every target file, in bergson's own
     virtual environment (``--bergson-venv``; it must not be installed into the project venv),
     through bench/bergson_driver.py (run by path with that venv's Python), which only adds
     timestamps around its gradient-collection loop. The equivalent plain ``bergson build``
     commands are written to the report.
  4. ours: ``PerExampleGradients`` + ``Featurizer`` (LESS Adam features for the pool, SGD features
     for targets) for each projector kind in ``--kinds``, in this process.
  5. Throughput: examples/second of the featurization loop alone (batches in, unit features out),
     excluding model loading and tokenization, for both; ``--repeats`` alternates the two and
     keeps each one's best. Precision: for each target task, the fraction of the top
     ``--fraction`` of the subset (by <feature, mean target feature>) that belongs to that task.

Usage (from the repository root; bergson installed in its own venv, see the report's
``setup.bergson_install``):
  python -m bench.bergson_compare --pool data/bigbench/pool.jsonl \
      --targets-dir data/bigbench/targets --model-dir data/smollm2-135m-instruct \
      --bergson-venv /tmp/venv-bergson --out bench/results/bergson.json
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._args import (
    add_model_args,
    add_threads_arg,
    bench_parser,
    command_line,
    lora_settings,
    start,
)
from bench.featurize import synthetic_adam_state
from bench.report import write_report
from indexer.jsonl import iter_examples, read_examples
from indexer.model_io import load_adapter_weights, load_lora_model, load_tokenizer
from less_core.config import LoraSettings, ProjectionConfig
from less_core.data import collate, tokenize_example
from less_core.featurize import Featurizer
from less_core.lora_grads import PerExampleGradients
from less_core.optimizer_state import adam_state_from_state_dict
from less_core.projectors import make_projector

log = logging.getLogger("bench.bergson_compare")

# bergson's interpreter runs this file by path (see its docstring for why it is not a module)
BERGSON_DRIVER = Path(__file__).resolve().with_name("bergson_driver.py")

BERGSON_INSTALL = (
    "python3 -m venv {venv} && {venv}/bin/pip install torch==2.13.0 bergson && "
    "{venv}/bin/pip uninstall -y torchvision torchaudio"
)
# bergson refuses a token budget above the model's context length
BERGSON_MAX_TOKEN_BATCH = 8192


# ----------------------------------------------------------------------------- data


def draw_subset(examples, tokenizer, n: int, max_length: int, seed: int):
    """A seeded subset of n examples with every task present, none longer than max_length.

    Returns (subset in pool order, tokenized subset aligned with it, number left out as too long).
    """
    toks = [tokenize_example(tokenizer, e, 10**9) for e in examples]
    keep = [
        i for i, t in enumerate(toks) if len(t.input_ids) <= max_length and t.n_response_tokens > 0
    ]
    too_long = len(examples) - len(keep)
    by_task: dict[str, list[int]] = {}
    for i in keep:
        by_task.setdefault(examples[i].metadata["task"], []).append(i)
    if n < len(by_task):
        raise SystemExit(f"--n {n} is smaller than the number of tasks ({len(by_task)})")
    if n > len(keep):
        raise SystemExit(f"--n {n} exceeds the {len(keep)} usable pool examples")
    rng = random.Random(seed)
    chosen: set[int] = set()
    per_task = n // len(by_task)
    for task in sorted(by_task):
        chosen.update(rng.sample(by_task[task], min(per_task, len(by_task[task]))))
    rest = sorted(set(keep) - chosen)
    chosen.update(rng.sample(rest, n - len(chosen)))
    rows = sorted(chosen)
    return [examples[i] for i in rows], [toks[i] for i in rows], too_long


def write_jsonl(path: Path, examples) -> None:
    with path.open("w") as f:
        for e in examples:
            row = {"id": e.id, "messages": list(e.messages), **e.metadata}
            f.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------- shared inputs


def make_shared_inputs(ns, work: Path, lora: LoraSettings):
    """Model with the seeded adapter (saved for bergson), and the optimizer.pt both tools read."""
    model_dir = Path(ns.model_dir).resolve()
    model = load_lora_model(model_dir, lora, torch.device("cpu"))
    torch.manual_seed(ns.seed)
    with torch.no_grad():  # a trained-looking adapter: B = 0 would zero all A gradients
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    adapter = work / "adapter"
    model.save_pretrained(str(adapter))
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(model_dir)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    load_adapter_weights(model, adapter)  # ours reads the very file bergson reads

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    synth = synthetic_adam_state(model, ns.seed)
    state = {
        i: {
            "exp_avg": synth.exp_avg[n].reshape(s).clone(),
            "exp_avg_sq": synth.exp_avg_sq[n].reshape(s).clone(),
            "step": torch.tensor(float(synth.step)),
            # bergson prefers a recorded name; it keys PEFT weights without the adapter name
            "param_name": n.replace(".default.", "."),
        }
        for i, (n, s) in enumerate(zip(names, shapes))
    }
    groups = [
        {
            "params": list(range(len(names))),
            "lr": 2e-5,
            "betas": synth.betas,
            "eps": synth.eps,
            "weight_decay": 0.0,
        }
    ]
    opt_dir = work / "optimizer"
    opt_dir.mkdir()
    torch.save({"state": state, "param_groups": groups}, opt_dir / "optimizer.pt")
    adam = adam_state_from_state_dict(
        torch.load(opt_dir / "optimizer.pt", weights_only=False), names, shapes
    )
    return model, adapter, opt_dir, adam


# ----------------------------------------------------------------------------- bergson


def bergson_flags(
    ns, adapter: Path, opt_dir: Path | None, dataset: Path, p_dim: int, token_batch: int
):
    flags = [
        "--model",
        str(adapter),
        "--tokenizer",
        str(Path(ns.model_dir).resolve()),
        "--precision",
        "fp32",
        "--dataset",
        str(dataset),
        "--split",
        "train",
        "--conversation_column",
        "messages",
        "--projection_dim",
        str(p_dim),
        "--projection_type",
        "rademacher",
        "--projection_target",
        ns.bergson_projection_target,
        "--projection_seed",
        str(ns.seed),
        "--token_batch_size",
        str(token_batch),
        "--max_batch_size",
        str(ns.batch_size),
        "--loss_fn",
        "ce",
        "--loss_reduction",
        "mean",
        "--unit_normalize",
        "true",
    ]
    if opt_dir is not None:
        flags += ["--optimizer_state", str(opt_dir)]
    return flags


def run_bergson(ns, run_path: Path, flags: list[str], env: dict) -> dict:
    """One `bergson build` through the timing driver; returns its timings and gradients."""
    py = Path(ns.bergson_venv) / "bin" / "python"
    timings = run_path.parent / (run_path.name + ".timings.json")
    cmd = [
        str(py),
        str(BERGSON_DRIVER),
        str(timings),
        "build",
        str(run_path),
        "--overwrite",
        "true",
        *flags,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"bergson build failed (exit {proc.returncode}): {shlex.join(cmd)}")
    out = json.loads(timings.read_text())
    out["wall_s"] = wall
    info = json.loads((run_path / "info.json").read_text())
    grads = np.memmap(
        run_path / "gradients.bin",
        dtype=np.dtype(info["base_dtype"]),
        mode="r",
        shape=(info["num_grads"], sum(info["grad_sizes"].values())),
    )
    out["features"] = np.array(grads, dtype=np.float32)
    out["dim"] = int(out["features"].shape[1])
    return out


# ----------------------------------------------------------------------------- ours


def run_ours(featurizer: Featurizer, batches, order, n: int):
    """Featurize batches (per-batch timestamps); rows back in subset order."""
    feats = None
    losses = np.zeros(n, dtype=np.float32)
    start = time.perf_counter()
    marks = []
    row = 0
    for b in batches:
        f, loss = featurizer(b)
        if feats is None:
            feats = np.zeros((n, f.shape[1]), dtype=np.float32)
        idx = order[row : row + f.shape[0]]
        feats[idx] = f.numpy()
        losses[idx] = loss.numpy()
        row += f.shape[0]
        marks.append(time.perf_counter())
    batch_s = [t - (marks[i - 1] if i else start) for i, t in enumerate(marks)]
    return (
        feats,
        losses,
        {
            "featurize_s": marks[-1] - start,
            "batch_s": batch_s,
            "batch_sizes": [b.input_ids.shape[0] for b in batches],
            "batch_tokens": [int(b.attention_mask.sum()) for b in batches],
        },
    )


def batches_of(toks, batch_size: int, pad_id: int):
    order = sorted(range(len(toks)), key=lambda i: len(toks[i].input_ids))
    batches = [
        collate([toks[i] for i in order[j : j + batch_size]], pad_id)
        for j in range(0, len(order), batch_size)
    ]
    return batches, np.array(order)


# ----------------------------------------------------------------------------- scoring


def precision_at(features: np.ndarray, tasks: list[str], targets: np.ndarray, task: str, k: int):
    """Fraction of the top k by <f(z), mean target feature> that belongs to ``task``."""
    scores = features.astype(np.float64) @ targets.astype(np.float64).mean(axis=0)
    top = np.argsort(-scores, kind="stable")[:k]
    return float(np.mean([tasks[i] == task for i in top])), scores


def rates(timing: dict) -> dict:
    """Examples/s over the whole pass; tokens/s without the first batch ("steady").

    The whole pass covers exactly the same examples for both tools and includes their one-time
    set-up (projection matrices, caches). The tools batch differently (bergson packs the longest
    examples first, we sort shortest first), so without the first batch the remaining examples
    differ: that rate is in real (non-padding) tokens per second.
    """
    sizes, secs, tokens = timing["batch_sizes"], timing["batch_s"], timing["batch_tokens"]
    out = {
        "examples": sum(sizes),
        "tokens": sum(tokens),
        "featurize_s": sum(secs),
        "examples_per_s": sum(sizes) / sum(secs),
        "tokens_per_s": sum(tokens) / sum(secs),
    }
    if len(sizes) > 1:
        out["steady_tokens_per_s"] = sum(tokens[1:]) / sum(secs[1:])
    return out


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["featurize_s"])


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser("bergson_compare", __doc__)
    add_model_args(ap)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--targets-dir", required=True, help="one <task>.jsonl per target task")
    ap.add_argument(
        "--n", type=int, default=256, help="pool examples (seeded subset with every task)"
    )
    ap.add_argument("--bergson-venv", default="/tmp/venv-bergson")
    ap.add_argument("--out", default="bench/results/bergson.json")
    ap.add_argument("--work-dir", default=None, help="scratch dir (default: a temp dir, removed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=16, help="ours; bergson's --max_batch_size")
    ap.add_argument("--dim", type=int, default=8192, help="our projection dim P")
    ap.add_argument("--kinds", default="sjlt", help="our projector kinds, comma-separated")
    ap.add_argument(
        "--bergson-projection-target",
        choices=("per_module", "global"),
        default="per_module",
        help="per_module (bergson's default): p x p per module, p = floor(sqrt(dim / modules)); "
        "global: one dense Rademacher projection to exactly --dim, like LESS",
    )
    ap.add_argument(
        "--bergson-optimizer-state",
        choices=("pool", "pool+targets", "none"),
        default="pool+targets",
        help="where bergson applies its second-moment normalization from the shared optimizer.pt",
    )
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="alternate bergson/ours pool runs, keep each one's best",
    )
    add_threads_arg(ap, help="torch/OpenMP threads for both")
    ns = ap.parse_args(argv)
    ns.command = command_line(ap, argv)
    start(ns)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # bergson gets what we use
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not (Path(ns.bergson_venv) / "bin" / "bergson").exists():
        raise SystemExit(
            f"no bergson in {ns.bergson_venv}; install it with:\n  "
            + BERGSON_INSTALL.format(venv=ns.bergson_venv)
        )

    work = Path(ns.work_dir) if ns.work_dir else Path(tempfile.mkdtemp(prefix="bergson-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(ns, work, env)
    finally:
        if not ns.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def _run(ns, work: Path, env: dict) -> int:
    lora = lora_settings(ns)
    tokenizer = load_tokenizer(ns.model_dir)
    examples = list(iter_examples(ns.pool))
    subset, toks, too_long = draw_subset(examples, tokenizer, ns.n, ns.max_length, ns.seed)
    tasks = [e.metadata["task"] for e in subset]
    subset_path = work / "pool_subset.jsonl"
    write_jsonl(subset_path, subset)
    target_files = sorted(Path(ns.targets_dir).glob("*.jsonl"))
    if not target_files:
        raise SystemExit(f"no *.jsonl in {ns.targets_dir}")

    model, adapter, opt_dir, adam = make_shared_inputs(ns, work, lora)
    grads = PerExampleGradients(model)
    n_modules = len(grads.layout.names)
    p_dim = (
        ns.dim
        if ns.bergson_projection_target == "global"
        else max(1, math.isqrt(ns.dim // n_modules))
    )
    target_sets = {tf.stem: read_examples(tf) for tf in target_files}
    longest = max(len(t.input_ids) for t in toks)
    longest_all = max(
        [longest]
        + [
            len(tokenize_example(tokenizer, e, 10**9).input_ids)
            for ex in target_sets.values()
            for e in ex
        ]
    )
    token_batch = min(BERGSON_MAX_TOKEN_BATCH, ns.batch_size * longest_all)
    log.info(
        "subset %d examples (%d tasks, longest %d tokens), LoRA d=%d in %d modules, ours P=%d, "
        "bergson %s p=%d",
        len(subset),
        len(set(tasks)),
        longest,
        grads.layout.total,
        n_modules,
        ns.dim,
        ns.bergson_projection_target,
        p_dim,
    )

    pool_flags = bergson_flags(
        ns,
        adapter,
        None if ns.bergson_optimizer_state == "none" else opt_dir,
        subset_path,
        p_dim,
        token_batch,
    )
    kinds = ns.kinds.split(",")
    batches, order = batches_of(toks, ns.batch_size, tokenizer.pad_token_id)

    bergson_runs, ours_runs = [], {k: [] for k in kinds}
    bergson_pool = None
    ours_pool: dict[str, tuple] = {}
    for r in range(ns.repeats):
        log.info("repeat %d/%d: bergson build (pool)", r + 1, ns.repeats)
        res = run_bergson(ns, work / f"bergson_pool_{r}", pool_flags, env)
        bergson_runs.append({k: v for k, v in res.items() if k != "features"})
        bergson_pool = res if bergson_pool is None else bergson_pool
        for kind in kinds:
            log.info("repeat %d/%d: ours/%s (pool)", r + 1, ns.repeats, kind)
            proj = make_projector(
                ProjectionConfig(kind=kind, dim=ns.dim, seed=ns.seed), grads.layout
            )
            feats, losses, timing = run_ours(
                Featurizer(grads, proj, adam), batches, order, len(subset)
            )
            ours_runs[kind].append(timing)
            ours_pool.setdefault(kind, (feats, losses))

    # targets: bergson build (its query-side gradients); ours SGD features (SPEC 2.4)
    k = max(1, min(len(subset), round(ns.fraction * len(subset))))
    tgt_opt = opt_dir if ns.bergson_optimizer_state == "pool+targets" else None
    # one `bergson build` over all target files together (rows in file order), split by task
    targets_path = work / "targets.jsonl"
    write_jsonl(targets_path, [e for ex in target_sets.values() for e in ex])
    target_flags = bergson_flags(ns, adapter, tgt_opt, targets_path, p_dim, token_batch)
    log.info("bergson build (targets: %d files)", len(target_sets))
    res = run_bergson(ns, work / "bergson_targets", target_flags, env)
    target_run = {k2: v for k2, v in res.items() if k2 != "features"}
    precision: dict[str, dict] = {}
    row0 = 0
    for task, targets in target_sets.items():
        b_targets = res["features"][row0 : row0 + len(targets)]
        row0 += len(targets)
        prec_b, _ = precision_at(bergson_pool["features"], tasks, b_targets, task, k)
        entry = {
            "n_targets": len(targets),
            "in_subset": tasks.count(task),
            "chance": tasks.count(task) / len(subset),
            "bergson": prec_b,
        }
        t_toks = [tokenize_example(tokenizer, e, ns.max_length) for e in targets]
        t_batches, t_order = batches_of(t_toks, ns.batch_size, tokenizer.pad_token_id)
        for kind in kinds:
            proj = make_projector(
                ProjectionConfig(kind=kind, dim=ns.dim, seed=ns.seed), grads.layout
            )
            q, _, _ = run_ours(Featurizer(grads, proj), t_batches, t_order, len(targets))
            entry[f"ours/{kind}"], _ = precision_at(ours_pool[kind][0], tasks, q, task, k)
        precision[task] = entry

    # sanity: same tokens, comparable losses (bergson's loss leaves out the end-of-turn tokens)
    our_lengths = [len(t.input_ids) for t in toks]
    b_losses = np.array(bergson_pool["losses"]) if bergson_pool["losses"] else None
    o_losses = ours_pool[kinds[0]][1]
    sanity = {
        "same_token_counts": bergson_pool["lengths"] == our_lengths,
        "loss_mean_ours": float(o_losses.mean()),
        "loss_mean_bergson": float(b_losses.mean()) if b_losses is not None else None,
        "loss_corr": float(np.corrcoef(o_losses, b_losses)[0, 1]) if b_losses is not None else None,
    }

    b_best = rates(best(bergson_runs))
    throughput = {"bergson": b_best, **{f"ours/{kd}": rates(best(ours_runs[kd])) for kd in kinds}}
    speed = {}
    for kind in kinds:
        o = throughput[f"ours/{kind}"]
        speed[f"ours_{kind}_over_bergson"] = o["examples_per_s"] / b_best["examples_per_s"]
        if "steady_tokens_per_s" in o and "steady_tokens_per_s" in b_best:
            speed[f"ours_{kind}_over_bergson_steady_tokens"] = (
                o["steady_tokens_per_s"] / b_best["steady_tokens_per_s"]
            )
    mean_prec = {
        m: float(np.mean([p[m] for p in precision.values()]))
        for m in ["bergson", *[f"ours/{kd}" for kd in kinds], "chance"]
    }

    def bergson_cmd(flags: list[str], run: str) -> str:
        # the report names the scratch dir <work> and the model dir as given, not this machine's
        # absolute paths
        line = shlex.join(
            [str(Path(ns.bergson_venv) / "bin" / "bergson"), "build", run, "--overwrite", "true"]
            + flags
        )
        line = line.replace(str(Path(ns.model_dir).resolve()), ns.model_dir)
        return line.replace(str(work.resolve()), "<work>").replace(str(work), "<work>")

    report = {
        "benchmark": "bergson_compare",
        "command": ns.command,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": "cpu",
            "torch": torch.__version__,
            "load_avg_at_end": os.getloadavg(),
        },
        "setup": {
            "model_dir": ns.model_dir,
            "lora": lora.to_dict(),
            "lora_params": grads.layout.total,
            "lora_modules": n_modules,
            "n": len(subset),
            "tasks": len(set(tasks)),
            "left_out_longer_than_max_length": too_long,
            "max_length": ns.max_length,
            "longest_tokens": longest,
            "batch_size": ns.batch_size,
            "ours_dim": ns.dim,
            "ours_kinds": kinds,
            "bergson_dim": bergson_pool["dim"],
            "bergson_projection_target": ns.bergson_projection_target,
            "bergson_per_module_p": None if ns.bergson_projection_target == "global" else p_dim,
            "bergson_token_batch_size": token_batch,
            "bergson_optimizer_state": ns.bergson_optimizer_state,
            "bergson_version": bergson_pool["bergson_version"],
            "bergson_torch": bergson_pool["torch"],
            "bergson_install": BERGSON_INSTALL.format(venv=ns.bergson_venv),
            "top_k": k,
            "fraction": ns.fraction,
            "repeats": ns.repeats,
            "seed": ns.seed,
        },
        "bergson_commands": {
            "pool": bergson_cmd(pool_flags, "<work>/bergson_pool"),
            "targets": bergson_cmd(target_flags, "<work>/bergson_targets"),
            "note": "<work>/adapter is the seeded PEFT adapter and <work>/optimizer/optimizer.pt "
            "the shared Adam state this script writes, <work>/targets.jsonl all target files "
            "concatenated in name order; bergson_driver.py runs exactly these commands "
            "in-process with timestamps around bergson's gradient-collection loop",
        },
        "throughput": throughput,
        "speed_ratio": speed,
        "bergson_process_wall_s": [r["wall_s"] for r in bergson_runs],
        "bergson_runs": bergson_runs,
        "ours_runs": ours_runs,
        "bergson_target_run": target_run,
        "precision": precision,
        "mean_precision": mean_prec,
        "sanity": sanity,
        "bars": {
            "ours_over_bergson_min": 1.0,
            "ours_over_bergson_goal": 1.2,
            "precision": "ours >= bergson",
        },
    }
    write_report(
        report,
        ns.out,
        summary={
            "throughput": throughput,
            "speed_ratio": speed,
            "mean_precision": mean_prec,
            "precision": precision,
            "sanity": sanity,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
