"""Shared fixtures: marker skips, a tiny model, a synthetic pool, a real warmup, datastores."""

import json
import os
import random
from pathlib import Path

import pytest
import torch

from indexer.config import BuildConfig, WarmupConfig
from less_core.config import LoraSettings, ProjectionConfig, TokenizationConfig
from tests.tiny_llm import save_tiny_llm

TASKS = {
    "add": lambda r: (f"add {r.randint(0, 9)} and {r.randint(0, 9)}", f"{r.randint(0, 18)}"),
    "rev": lambda r: (
        (w := "".join(r.choice("abcdef") for _ in range(5))) and f"reverse {w}",
        w[::-1],
    ),
    "upper": lambda r: (
        (w := "".join(r.choice("ghijk") for _ in range(4))) and f"shout {w}",
        w.upper() + "!",
    ),
    "count": lambda r: (
        f"count to {(n := r.randint(2, 6))}",
        " ".join(str(i) for i in range(1, n + 1)),
    ),
}


SOURCES = ("web", "books", "synthetic")


def row_metadata(task: str, i: int) -> dict:
    """Metadata fields of the ``i``-th row of a task besides ``task``: an int ``difficulty``
    (1-5, absent on every 7th row) and a string ``source``. Derived from the position, not
    drawn, so the rows' text is the same with or without them."""
    meta: dict = {"source": SOURCES[(i + len(task)) % len(SOURCES)]}
    if i % 7 != 6:
        meta["difficulty"] = i % 5 + 1
    return meta


def make_rows(n_per_task: int, seed: int, prefix: str) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for task, gen in TASKS.items():
        for i in range(n_per_task):
            q, a = gen(r)
            if i % 3 == 0:
                rows.append(
                    {
                        "id": f"{prefix}{task}-{i}",
                        "prompt": q + " = ",
                        "completion": a,
                        "task": task,
                        **row_metadata(task, i),
                    }
                )
            else:
                rows.append(
                    {
                        "id": f"{prefix}{task}-{i}",
                        "task": task,
                        **row_metadata(task, i),
                        "messages": [
                            {"role": "user", "content": q},
                            {"role": "assistant", "content": a},
                        ],
                    }
                )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


LORA = LoraSettings(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"))
WARMUP = WarmupConfig(
    fraction=0.5, epochs=2, learning_rate=5e-3, batch_size=2, gradient_accumulation=2, seed=0
)
TOKENS = TokenizationConfig(max_length=64)
PROJ = ProjectionConfig(kind="rademacher", dim=256, seed=7)
BUILD = BuildConfig(batch_size=8, feature_dtype="float32")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_llm(tmp_path_factory.mktemp("model") / "tiny", seed=0)


@pytest.fixture(scope="session")
def pool_path(tmp_path_factory) -> Path:
    return write_jsonl(
        tmp_path_factory.mktemp("data") / "pool.jsonl", make_rows(12, seed=1, prefix="p-")
    )


@pytest.fixture(scope="session")
def warmup_dir(tmp_path_factory, tiny_model_dir, pool_path) -> Path:
    from indexer.warmup import run_warmup

    return run_warmup(
        tiny_model_dir, pool_path, tmp_path_factory.mktemp("warmup") / "w", LORA, WARMUP, TOKENS
    )


def build_tiny_datastore(
    root: Path, model_dir: Path, pool: Path, warmup: Path, device: str | None = None, **build
) -> Path:
    """Builds the tests' datastore config at ``root`` on ``device`` (default: auto);
    ``build`` overrides BuildConfig fields."""
    from dataclasses import replace

    from indexer.build import BuildRequest, build_datastore

    build_datastore(
        BuildRequest(
            model_dir,
            pool,
            warmup,
            root,
            "tiny-llama",
            projection=PROJ,
            build=replace(BUILD, **build),
            tokenization=TOKENS,
            device=device,
        )
    )
    return root


@pytest.fixture(scope="session")
def datastore_root(tmp_path_factory, tiny_model_dir, pool_path, warmup_dir) -> Path:
    root = tmp_path_factory.mktemp("ds") / "tiny"
    return build_tiny_datastore(root, tiny_model_dir, pool_path, warmup_dir)


@pytest.fixture(scope="session")
def sharded_datastore_root(tmp_path_factory, tiny_model_dir, pool_path, warmup_dir) -> Path:
    """The same build as ``datastore_root`` with its 48 rows in shards of 20 (20 + 20 + 8)."""
    root = tmp_path_factory.mktemp("ds-sharded") / "tiny"
    return build_tiny_datastore(root, tiny_model_dir, pool_path, warmup_dir, shard_rows=20)


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("LESS_RUN_SLOW") == "1"
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: set LESS_RUN_SLOW=1 to run"))
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="cuda: no CUDA GPU on this machine"))
