"""Does LESS select useful data? Retrieval precision, training quality and projection fidelity.

On a BIG-bench pool mixed from many tasks, for each target task (8 few-shot targets):

1. retrieval sanity (setting i, the target task's own examples are in the pool): precision of
   the top 5 % at picking that task's pool examples, for LESS (all checkpoints and only the
   last), random, BM25 (rank-bm25 over the prompt+answer words) and RDS (cosine of the base
   model's mean-pooled final hidden states);
2. training quality, the claim that matters: a fresh LoRA trained on each method's 5 % (same
   seed, same steps), held-out loss (and exact-match accuracy of greedy answers) on the task's
   eval split; in setting (i) and in setting (ii), where the task's examples are removed from the
   pool so that selection has to find related data;
3. fidelity of the projection: Spearman correlation between projected and exact (unprojected)
   gradient cosines, per projector kind and dimension.

Usage (from the repository root, after ``./run demo`` has built the data and datastores):
  python -m bench.evaluate --splits data/demo/<tag>/splits \
      --datastore data/demo/<tag>/run-<key>/datastores/bigbench \
      [--datastore-without data/.../datastores/bigbench-without] \
      --model-dir data/smollm2-135m-instruct --out bench/results/evaluate.json
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._args import bench_parser, command_line
from bench.report import write_report
from indexer.config import WarmupConfig
from indexer.datastore import Datastore
from indexer.jsonl import iter_jsonl, read_examples
from indexer.model_io import load_base_model, load_tokenizer
from indexer.optimizer_files import load_adam_state
from indexer.query import QueryEngine
from indexer.warmup import train_lora
from less_core.config import ProjectionConfig, SelectionConfig
from less_core.data import Example, collate, tokenize_example
from less_core.lora_grads import response_losses
from less_core.projectors import make_projector
from less_core.scoring import l2_normalize

log = logging.getLogger("bench.evaluate")
EVAL_BATCH = 8


def row_text(row: dict) -> str:
    if "messages" in row:
        return " ".join(m["content"] for m in row["messages"])
    return f"{row['prompt']} {row['completion']}"


def answer_of(example: Example) -> str:
    if example.messages is not None:
        return [m["content"] for m in example.messages if m["role"] == "assistant"][-1]
    return example.completion


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


# --- selection methods: each returns a score per candidate row (higher is better) -------------


def scores_less(
    engine: QueryEngine, targets: list[Example], checkpoints: tuple[str, ...] | None
) -> np.ndarray:
    sel = engine.select(targets, SelectionConfig(k=engine.n, checkpoints=checkpoints))
    scores = np.empty(engine.n)
    scores[sel.rows] = sel.scores
    return scores


def scores_bm25(pool_rows: list[dict], targets: list[Example]) -> np.ndarray:
    from rank_bm25 import BM25Okapi

    bm25 = BM25Okapi([words(row_text(r)) for r in pool_rows])
    per_target = [
        bm25.get_scores(
            words(
                row_text(
                    {"messages": t.messages}
                    if t.messages
                    else {"prompt": t.prompt, "completion": t.completion}
                )
            )
        )
        for t in targets
    ]
    return np.mean(per_target, axis=0)


@torch.no_grad()
def mean_hidden(model, tokenizer, examples: list[Example], max_length: int) -> torch.Tensor:
    """(n, H) L2-normalized mean of the final hidden states over each sequence (RDS)."""
    toks = [tokenize_example(tokenizer, e, max_length) for e in examples]
    out = []
    for i in range(0, len(toks), EVAL_BATCH):
        b = collate(toks[i : i + EVAL_BATCH], tokenizer.pad_token_id)
        h = model.get_decoder()(
            input_ids=b.input_ids, attention_mask=b.attention_mask
        ).last_hidden_state
        m = b.attention_mask.unsqueeze(-1).to(h.dtype)
        out.append((h * m).sum(1) / m.sum(1))
    return l2_normalize(torch.cat(out))


def scores_rds(base, tokenizer, pool_repr: torch.Tensor, targets, max_length) -> np.ndarray:
    """Mean cosine between the pool's (N, H) representations and the targets'."""
    t = mean_hidden(base, tokenizer, targets, max_length)
    return (pool_repr @ t.T).mean(dim=1).double().numpy()


def top_rows(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The k best candidate rows by score (ties: lower row first)."""
    cand = np.flatnonzero(candidates)
    order = np.lexsort((cand, -scores[cand]))
    return cand[order[:k]]


# --- training quality --------------------------------------------------------------------------


@torch.no_grad()
def heldout(
    model, tokenizer, eval_examples: list[Example], max_length: int, accuracy: bool
) -> dict:
    toks = [tokenize_example(tokenizer, e, max_length) for e in eval_examples]
    losses = []
    for i in range(0, len(toks), EVAL_BATCH):
        losses.append(
            response_losses(model, collate(toks[i : i + EVAL_BATCH], tokenizer.pad_token_id))
        )
    out = {"loss": float(torch.cat(losses).mean())}
    if accuracy:
        hits = 0
        for ex in eval_examples:
            messages = (
                [m for m in ex.messages if m["role"] != "assistant"]
                if ex.messages
                else [{"role": "user", "content": ex.prompt}]
            )
            ids = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            gen = model.generate(
                **ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            text = tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            hits += text.strip().lower() == answer_of(ex).strip().lower()
        out["accuracy"] = hits / len(eval_examples)
    return out


# --- fidelity ------------------------------------------------------------------------------------


def fidelity(
    engine: QueryEngine, warmup_dir: Path | None, pool_examples, targets, dims, n_pool: int
) -> dict:
    """Spearman(projected cosine, exact cosine) over pool x target pairs at the last checkpoint."""
    grads, tok = engine.grads, engine.tokenizer
    last = engine.store.checkpoint_names[-1]
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(engine.model, engine.adapters[last])
    adam = None
    if warmup_dir is not None:
        names, shapes = list(grads.layout.names), [p.module.weight.shape for p in grads.params]
        adam = load_adam_state(warmup_dir / last / "optimizer.pt", names, shapes)
    from less_core.adam import adam_normalize

    def full(examples, with_adam):
        rows = []
        for i in range(0, len(examples), EVAL_BATCH):
            toks = [
                tokenize_example(tok, e, engine.tokenization.max_length)
                for e in examples[i : i + EVAL_BATCH]
            ]
            blocks, _ = grads.compute(collate(toks, tok.pad_token_id))
            if with_adam and adam is not None:
                blocks = [
                    adam_normalize(g, m, v, adam.betas, adam.eps)
                    for g, (m, v) in zip(blocks, adam.moments(grads.layout.names))
                ]
            rows.append(torch.cat(blocks, dim=1))
        return torch.cat(rows)

    train = full(pool_examples[:n_pool], True)
    tgt = full(targets, False)
    exact = (l2_normalize(train.double()) @ l2_normalize(tgt.double()).T).numpy().ravel()
    out = {"checkpoint": last, "pairs": int(exact.size), "adam": adam is not None, "results": []}
    for kind in ("rademacher", "sjlt"):
        for dim in dims:
            proj = make_projector(
                ProjectionConfig(kind=kind, dim=dim, seed=1, dense_cache_mb=0), grads.layout
            )
            approx = (
                (l2_normalize(proj.project_flat(train)) @ l2_normalize(proj.project_flat(tgt)).T)
                .numpy()
                .ravel()
            )
            out["results"].append(
                {
                    "kind": kind,
                    "dim": dim,
                    "spearman": spearman(approx, exact),
                    "max_abs_err": float(np.abs(approx - exact).max()),
                }
            )
    return out


# --- driver --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser("evaluate", __doc__)
    ap.add_argument(
        "--splits",
        required=True,
        help="dir with pool.jsonl, pool_without_targets.jsonl, targets/, eval/",
    )
    ap.add_argument("--datastore", required=True, help="datastore built on pool.jsonl")
    ap.add_argument(
        "--datastore-without",
        default=None,
        help="datastore built (with its own warmup) on pool_without_targets.jsonl; without it "
        "setting (ii) filters the full datastore's ranking",
    )
    ap.add_argument(
        "--warmup-dir", default=None, help="warmup checkpoints (for Adam moments in fidelity)"
    )
    ap.add_argument("--model-dir", required=True)
    ap.add_argument(
        "--tasks", default=None, help="comma-separated target tasks (default: all in targets/)"
    )
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--train-epochs", type=int, default=2)
    ap.add_argument("--train-lr", type=float, default=2e-4)
    ap.add_argument("--no-train", action="store_true", help="only retrieval and fidelity")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--fidelity-pool", type=int, default=48)
    ap.add_argument("--fidelity-dims", default="256,1024,4096,8192")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/evaluate.json")
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t_start = time.time()
    splits = Path(ns.splits)

    store = Datastore.open(ns.datastore)
    engine = QueryEngine(store, ns.model_dir, "cpu")
    pool_by_id = {row["id"]: row for _, row in iter_jsonl(splits / "pool.jsonl")}
    pool_rows = [pool_by_id[i] for i in store.ids]  # datastore row order
    pool_examples = [Example.from_dict(r) for r in pool_rows]
    row_task = np.array([r["task"] for r in pool_rows])
    tasks = (
        ns.tasks.split(",")
        if ns.tasks
        else sorted(p.stem for p in (splits / "targets").glob("*.jsonl"))
    )
    tokenizer = load_tokenizer(ns.model_dir)
    base = load_base_model(ns.model_dir, torch.device("cpu"))
    max_length = engine.tokenization.max_length
    lora = store.manifest.lora
    train_cfg = WarmupConfig(
        fraction=1.0,
        epochs=ns.train_epochs,
        learning_rate=ns.train_lr,
        batch_size=1,
        gradient_accumulation=4,
        seed=ns.seed,
    )
    pool_repr = mean_hidden(base, tokenizer, pool_examples, max_length)  # RDS, once for all tasks
    without = (
        QueryEngine(Datastore.open(ns.datastore_without), ns.model_dir, "cpu")
        if ns.datastore_without
        else None
    )

    manifest = store.manifest.model_dump(mode="json")  # as stored in manifest.json
    report = {
        "benchmark": "evaluate",
        "command": command_line(ap, argv),
        "datastore": {
            "version": store.version,
            "n": store.n,
            "projector": manifest["projector"],
            "checkpoints": store.checkpoint_names,
            "lora": manifest["lora"],
        },
        "setting_ii": "separate datastore and warmup"
        if without
        else "full datastore ranking filtered",
        "train": train_cfg.to_dict(),
        "tasks": {},
    }
    for task in tasks:
        targets = read_examples(splits / "targets" / f"{task}.jsonl", require_id=False)
        eval_ex = read_examples(splits / "eval" / f"{task}.jsonl", require_id=False)
        in_task = row_task == task
        res: dict = {
            "n_targets": len(targets),
            "n_eval": len(eval_ex),
            "pool_share": float(in_task.mean()),
        }
        scores = {
            "less": scores_less(engine, targets, None),
            "less_last_ckpt": scores_less(engine, targets, (store.checkpoint_names[-1],)),
            "bm25": scores_bm25(pool_rows, targets),
            "rds": scores_rds(base, tokenizer, pool_repr, targets, max_length),
            "random": np.random.default_rng(ns.seed).random(store.n),
        }
        everything = np.ones(store.n, dtype=bool)
        k_i = max(1, round(ns.fraction * store.n))
        picks = {"i": {m: top_rows(s, everything, k_i) for m, s in scores.items()}}
        res["precision_top5"] = {m: float(in_task[r].mean()) for m, r in picks["i"].items()}
        # Setting (ii): the task's rows are not candidates (or not in the datastore at all).
        others = ~np.isin(row_task, tasks)
        k_ii = max(1, round(ns.fraction * others.sum()))
        picks["ii"] = {
            m: top_rows(s, others, k_ii) for m, s in scores.items() if m != "less_last_ckpt"
        }
        if without is not None:
            sel = without.select(targets, SelectionConfig(k=k_ii))
            picks["ii"]["less"] = np.array([store.ids.index(i) for i in sel.ids])
        res["selected_tasks_ii"] = {
            m: dict(zip(*np.unique(row_task[r], return_counts=True)))
            for m, r in picks["ii"].items()
        }
        res["selected_tasks_ii"] = {
            m: {str(k): int(v) for k, v in d.items()} for m, d in res["selected_tasks_ii"].items()
        }
        log.info(
            "%s precision@5%%: %s", task, {m: round(v, 3) for m, v in res["precision_top5"].items()}
        )
        if not ns.no_train:
            res["base_model"] = heldout(base, tokenizer, eval_ex, max_length, not ns.no_accuracy)
            res["heldout"] = {}
            for setting, by_method in picks.items():
                for method, rows in by_method.items():
                    if method == "less_last_ckpt":
                        continue
                    toks = [tokenize_example(tokenizer, pool_examples[r], max_length) for r in rows]
                    model = train_lora(
                        Path(ns.model_dir),
                        toks,
                        Path(tempfile.mkdtemp(prefix="less-eval-train-")),
                        lora,
                        train_cfg,
                        tokenizer.pad_token_id,
                        device="cpu",
                        save_checkpoints=False,
                    )
                    res["heldout"][f"{setting}/{method}"] = heldout(
                        model, tokenizer, eval_ex, max_length, not ns.no_accuracy
                    )
                    log.info(
                        "%s %s/%s: %s", task, setting, method, res["heldout"][f"{setting}/{method}"]
                    )
                    del model
        report["tasks"][task] = res
        write_report(report, ns.out)  # partial results survive a kill

    first = read_examples(splits / "targets" / f"{tasks[0]}.jsonl", require_id=False)
    rng = random.Random(ns.seed)
    sample = rng.sample(pool_examples, min(ns.fidelity_pool, len(pool_examples)))
    report["fidelity"] = fidelity(
        engine,
        Path(ns.warmup_dir) if ns.warmup_dir else None,
        sample,
        first,
        [int(d) for d in ns.fidelity_dims.split(",")],
        ns.fidelity_pool,
    )
    report["wall_s"] = time.time() - t_start
    write_report(report, ns.out)
    plot(report, Path(ns.out).with_suffix(".png"))
    print(
        json.dumps(
            {
                t: {
                    "precision_top5": r["precision_top5"],
                    **({"heldout": r["heldout"]} if "heldout" in r else {}),
                }
                for t, r in report["tasks"].items()
            },
            indent=2,
        )
    )
    print(json.dumps(report["fidelity"]["results"], indent=2))
    return 0


def plot(report: dict, path: Path) -> None:
    """Precision per method and, when trained, held-out loss per method, setting and task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["tasks"])
    trained = all("heldout" in report["tasks"][t] for t in tasks)
    fig, axes = plt.subplots(
        1, 3 if trained else 1, figsize=(18 if trained else 7, 4.5), squeeze=False
    )
    methods = list(report["tasks"][tasks[0]]["precision_top5"])
    x = np.arange(len(tasks))
    width = 0.8 / len(methods)
    ax = axes[0][0]
    for i, m in enumerate(methods):
        ax.bar(
            x + i * width, [report["tasks"][t]["precision_top5"][m] for t in tasks], width, label=m
        )
    ax.plot(
        [-0.2, len(tasks) - 0.2],
        [report["tasks"][tasks[0]]["pool_share"]] * 2,
        "k--",
        label="chance",
    )
    ax.set_xticks(x + 0.4 - width / 2, tasks, rotation=15, fontsize=8)
    ax.set_title("precision of the top 5 % (own-task pool rows)")
    ax.legend(fontsize=7)
    if trained:
        for col, setting in ((1, "i"), (2, "ii")):
            ax = axes[0][col]
            keys = [k for k in report["tasks"][tasks[0]]["heldout"] if k.startswith(setting + "/")]
            w = 0.8 / (len(keys) + 1)
            ax.bar(
                x, [report["tasks"][t]["base_model"]["loss"] for t in tasks], w, label="base model"
            )
            for i, k in enumerate(keys):
                ax.bar(
                    x + (i + 1) * w,
                    [report["tasks"][t]["heldout"][k]["loss"] for t in tasks],
                    w,
                    label=k.split("/")[1],
                )
            ax.set_xticks(x + 0.4 - w / 2, tasks, rotation=15, fontsize=8)
            ax.set_title(f"held-out loss after training on 5 % — setting ({setting})")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
