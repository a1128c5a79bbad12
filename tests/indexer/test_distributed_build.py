"""``less-index build`` under a real ``torchrun`` (2 CPU ranks, gloo) equals a one-process build.

Bit-identity holds between runs with the same shard layout *and* the same BLAS thread count per
process (MKL picks its blocking by thread count): torchrun's ranks run with OMP_NUM_THREADS=1,
so the single-process references here are built with ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.build import BuildRequest, build_datastore, distributed_build_config
from indexer.config import BuildConfig
from indexer.datastore import CHECKSUMS, MANIFEST, Datastore
from indexer.distributed import Ranks, rank_device, world_from_env
from less_core.errors import ConfigError
from tests.conftest import BUILD, PROJ, TOKENS, make_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]
RANK_ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def build_args(model_dir, pool, warmup, out, batch_size=BUILD.batch_size, extra=()):
    """``less-index build`` flags for the fixtures' settings, on the CPU."""
    return [
        "build",
        *("--model-dir", str(model_dir), "--pool", str(pool), "--warmup-dir", str(warmup)),
        *("--out", str(out), "--device", "cpu", "--feature-dtype", "float32"),
        *("--proj-dim", str(PROJ.dim), "--proj-seed", str(PROJ.seed)),
        *("--batch-size", str(batch_size), "--max-length", str(TOKENS.max_length)),
        *extra,
    ]


def torchrun(args: list[str], nproc: int = 2) -> list[str]:
    """The command a user runs, with a free rendezvous port (--standalone)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "indexer.cli",
        *args,
    ]


def single_process_build(model_dir, pool, warmup, out, build: BuildConfig) -> Path:
    """The reference: an in-process build with one BLAS thread, like each torchrun rank."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_datastore(
            BuildRequest(
                model_dir,
                pool,
                warmup,
                out,
                projection=PROJ,
                build=build,
                tokenization=TOKENS,
                device="cpu",
            )
        )
    finally:
        torch.set_num_threads(threads)


def assert_same_version(a: Datastore, b: Datastore) -> None:
    """Same version name, manifest (but timings, times, host), ids and files, byte for byte."""
    assert a.version == b.version
    ma, mb = (json.loads((s.path / MANIFEST).read_text()) for s in (a, b))
    for m in (ma, mb):
        for key in ("timings", "created_at", "host"):
            m.pop(key)
    assert ma == mb
    sa, sb = (json.loads((s.path / CHECKSUMS).read_text()) for s in (a, b))
    sa.pop(MANIFEST), sb.pop(MANIFEST)
    assert sa == sb  # every feature, ids, adapter and skipped file has the same bytes
    for name in a.checkpoint_names:
        for shard in a.shards:
            fa = (a.shard_dir(shard) / f"features/{name}.npy").read_bytes()
            assert fa == (b.shard_dir(shard) / f"features/{name}.npy").read_bytes()
    assert a.ids == b.ids and a.verify_checksums() == []


def test_torchrun_build_equals_single_process_build(
    tmp_path, tiny_model_dir, pool_path, warmup_dir, datastore_root
):
    """3 shards of 20/20/8 rows on 2 ranks (rank 0 takes shards 0 and 2, rank 1 shard 1)."""
    out = tmp_path / "dist"
    args = build_args(tiny_model_dir, pool_path, warmup_dir, out, extra=["--shard-rows", "20"])
    run = subprocess.run(
        torchrun(args),
        env={**os.environ, **RANK_ENV},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    dist = Datastore.open(out)
    assert run.stdout.split() == [str(dist.path)]  # one line for the job, from rank 0
    assert "[rank 0/2]" in run.stderr and "[rank 1/2]" in run.stderr
    assert re.search(r"\[rank 0/2\].*featurizing shards \[0, 2\] of 3", run.stderr)
    assert re.search(r"\[rank 1/2\].*featurizing shards \[1\] of 3", run.stderr)
    assert set(dist.manifest.timings) >= {"featurize_s/rank0", "featurize_s/rank1"}
    assert [(s.name, s.start, s.n) for s in dist.shards] == [
        ("shards/00000", 0, 20),
        ("shards/00001", 20, 20),
        ("shards/00002", 40, 8),
    ]
    ref = single_process_build(
        tiny_model_dir, pool_path, warmup_dir, tmp_path / "one", replace(BUILD, shard_rows=20)
    )
    assert_same_version(dist, Datastore.open(ref.parent.parent))
    # Against the one-shard build: batches differ (padding, BLAS blocking), float rounding only.
    whole = Datastore.open(datastore_root)
    assert dist.ids == whole.ids
    for name in whole.checkpoint_names:
        np.testing.assert_allclose(
            np.asarray(dist.features(name)[:], np.float64),
            np.asarray(whole.features(name), np.float64),
            atol=1e-5,
        )


def _rank_pids(parent: int) -> dict[int, int]:
    """RANK -> pid of the worker processes torchrun (pid ``parent``) started."""
    pids = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        for item in env:
            if item.startswith(b"RANK="):
                pids[int(item[5:])] = int(proc.name)
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_torchrun_build_resumes_after_a_rank_is_killed(tmp_path, tiny_model_dir, warmup_dir):
    """SIGKILL rank 1 mid-featurization: torchrun stops rank 0 too; the same command resumes
    each rank's slice and ends with the bytes of an uninterrupted build of the same layout."""
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(15, seed=3, prefix="k-"))  # 60 rows
    out = tmp_path / "killed"
    cmd = torchrun([*build_args(tiny_model_dir, pool, warmup_dir, out, batch_size=1)])
    env = {**os.environ, **RANK_ENV, "LESS_FLUSH_INTERVAL_S": "0"}
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    killed, pids = False, {}
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(pids) < 2:
                pids = _rank_pids(proc.pid)
            # No --shard-rows: 30 rows per rank; shard 1 (rows 30..59) belongs to rank 1.
            found = list((out / ".staging").glob("*/progress/00001-checkpoint-6.json"))
            if len(pids) == 2 and found:
                try:
                    done = json.loads(found[0].read_text())["batches_done"]
                except (OSError, ValueError):
                    done = 0
                if done >= 5:
                    os.kill(pids[1], signal.SIGKILL)
                    killed = True
                    break
            time.sleep(0.02)
        code = proc.wait(timeout=60)  # torchrun stops rank 0 and fails the job
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed, "build finished or stalled before rank 1 could be killed"
    assert code != 0 and not (out / "CURRENT").exists()
    gone = time.monotonic() + 30  # rank 0 was stopped too (zombies are reaped soon after)
    while time.monotonic() < gone and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids.values())

    resumed = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[rank 1/2]" in resumed.stderr and "resuming at batch" in resumed.stderr
    dist = Datastore.open(out)
    assert dist.manifest.build.shard_rows == 30  # ceil(60 / 2): recorded as the build's layout
    ref = single_process_build(
        tiny_model_dir,
        pool,
        warmup_dir,
        tmp_path / "clean",
        replace(BUILD, batch_size=1, shard_rows=30),
    )
    assert_same_version(dist, Datastore.open(ref.parent.parent))


def test_torchrun_build_fails_fast_when_one_rank_fails(tmp_path, tiny_model_dir, warmup_dir):
    """Rank 0 rejects the pool while rank 1 waits for it: the job ends, it does not hang."""
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "a", "prompt": "x", "completion": "y"}\n{"id": "b", "prompt": \n')
    t0 = time.monotonic()
    run = subprocess.run(
        torchrun([*build_args(tiny_model_dir, pool, warmup_dir, tmp_path / "ds")]),
        env={**os.environ, **RANK_ENV, "LESS_DIST_TIMEOUT_S": "120"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and time.monotonic() - t0 < 100
    assert "[rank 0/2]" in run.stderr and "pool.jsonl:2: malformed JSON" in run.stderr
    assert not (tmp_path / "ds" / "CURRENT").exists()


def test_work_split_and_environment(tmp_path, pool_path):
    assert world_from_env({}) is None
    assert world_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (1, 4, 1)
    with pytest.raises(ConfigError):
        world_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    ranks = Ranks(rank=1, world_size=2)
    assert [i for i in range(5) if ranks.owns(i)] == [1, 3]
    assert [i for i in range(5) if Ranks().owns(i)] == [0, 1, 2, 3, 4]
    # One process: collectives hand the value back, and nothing needs a process group.
    assert Ranks().all_gather(3, "x") == [3] and Ranks().broadcast(3, "x") == 3
    Ranks().agree("key", "x")
    assert rank_device("cpu", 1) == torch.device("cpu")
    assert rank_device("cuda", 3) == torch.device("cuda", 3)
    assert rank_device("cuda:0", 3) == torch.device("cuda", 0)
    # Without --shard-rows: ceil(pool examples / world) rows per shard; with it, as given.
    assert distributed_build_config(BUILD, pool_path, 1) == BUILD
    assert distributed_build_config(BUILD, pool_path, 2).shard_rows == 24
    assert distributed_build_config(BUILD, pool_path, 5).shard_rows == 10
    given = replace(BUILD, shard_rows=7)
    assert distributed_build_config(given, pool_path, 2) == given
