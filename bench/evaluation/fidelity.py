"""Fidelity of the projection: Spearman correlation between projected and exact (unprojected)
gradient cosines over pool × target pairs at the last checkpoint, per projector kind and P."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import set_peft_model_state_dict

from indexer.optimizer_files import load_adam_state
from indexer.query import QueryEngine
from less_core.adam import adam_normalize
from less_core.config import ProjectionConfig
from less_core.data import Example, collate, tokenize_example
from less_core.projectors import make_projector
from less_core.scoring import l2_normalize

FIDELITY_DIMS: tuple[int, ...] = (256, 1024, 4096, 8192)
FIDELITY_POOL = 48
BATCH = 8
#: Seed of the fresh projectors compared (not the datastore's: any draw must preserve cosines).
PROJECTOR_SEED = 1


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def fidelity(
    engine: QueryEngine,
    warmup_dir: Path,
    pool_examples: Sequence[Example],
    targets: Sequence[Example],
    seed: int,
    dims: Sequence[int] = FIDELITY_DIMS,
    n_pool: int = FIDELITY_POOL,
) -> dict[str, Any]:
    """Projected vs exact cosines of Adam-normalized pool gradients and SGD target gradients."""
    grads, tok = engine.grads, engine.tokenizer
    last = engine.store.checkpoint_names[-1]
    set_peft_model_state_dict(engine.model, engine.adapters[last])
    names, shapes = list(grads.layout.names), [p.module.weight.shape for p in grads.params]
    adam = load_adam_state(warmup_dir / last / "optimizer.pt", names, shapes)

    def full(examples: Sequence[Example], with_adam: bool) -> torch.Tensor:
        rows = []
        for i in range(0, len(examples), BATCH):
            toks = [
                tokenize_example(tok, e, engine.tokenization.max_length)
                for e in examples[i : i + BATCH]
            ]
            blocks, _ = grads.compute(collate(toks, tok.pad_token_id))
            if with_adam:
                blocks = [
                    adam_normalize(g, m, v, adam.betas, adam.eps)
                    for g, (m, v) in zip(blocks, adam.moments(grads.layout.names))
                ]
            rows.append(torch.cat(blocks, dim=1))
        return torch.cat(rows)

    sample = random.Random(seed).sample(list(pool_examples), min(n_pool, len(pool_examples)))
    train, tgt = full(sample, True), full(targets, False)
    exact = (l2_normalize(train.double()) @ l2_normalize(tgt.double()).T).numpy().ravel()
    out: dict[str, Any] = {"checkpoint": last, "pairs": int(exact.size), "results": []}
    for kind in ("rademacher", "sjlt"):
        for dim in dims:
            proj = make_projector(
                ProjectionConfig(kind=kind, dim=dim, seed=PROJECTOR_SEED, dense_cache_mb=0),
                grads.layout,
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
