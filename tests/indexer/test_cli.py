"""The less-index CLI: happy paths, resume after a real kill, and clear errors on bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.cli import main
from indexer.datastore import Datastore
from tests.conftest import BUILD, PROJ, TOKENS, make_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def build_args(model_dir, pool, warmup, out, batch_size=BUILD.batch_size, extra=()):
    return [
        "build",
        "--model-dir",
        str(model_dir),
        "--pool",
        str(pool),
        "--warmup-dir",
        str(warmup),
        "--out",
        str(out),
        "--proj-dim",
        str(PROJ.dim),
        "--proj-seed",
        str(PROJ.seed),
        "--batch-size",
        str(batch_size),
        "--feature-dtype",
        "float32",
        "--max-length",
        str(TOKENS.max_length),
        *extra,
    ]


def select_args(datastore, model_dir, targets, out, *extra):
    return [
        "select",
        "--datastore",
        str(datastore),
        "--model-dir",
        str(model_dir),
        "--targets",
        str(targets),
        "--out",
        str(out),
        *extra,
    ]


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_build_matches_library_build_and_info(
    tmp_path, tiny_model_dir, pool_path, warmup_dir, datastore_root, capsys
):
    code, out, _ = run_cli(
        build_args(tiny_model_dir, pool_path, warmup_dir, tmp_path / "ds"), capsys
    )
    assert code == 0
    ours, ref = Datastore.open(tmp_path / "ds"), Datastore.open(datastore_root)
    assert ours.version == ref.version  # same inputs and config -> same build key
    for name in ref.checkpoint_names:
        np.testing.assert_array_equal(ours.features(name), ref.features(name))
    code, out, _ = run_cli(["info", "--datastore", str(tmp_path / "ds")], capsys)
    assert code == 0 and "checkpoint-6" in out and "rademacher dim 256 seed 7" in out
    assert "index      exact (Flat)" in out and "storage    1 shard(s)" in out
    code, out, _ = run_cli(["info", "--datastore", str(tmp_path / "ds"), "--json"], capsys)
    assert json.loads(out)["n"] == 48


def test_cli_info_shows_an_approximate_index_and_select_takes_search_flags(
    tmp_path, tiny_model_dir, pool_path, warmup_dir, capsys
):
    from tests.conftest import build_tiny_datastore

    root = build_tiny_datastore(
        tmp_path / "hnsw", tiny_model_dir, pool_path, warmup_dir, index_factory="HNSW8"
    )
    code, out, _ = run_cli(["info", "--datastore", str(root)], capsys)
    assert code == 0 and "index      approximate HNSW8, 1 shard(s)" in out
    targets = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "add 1 and 2 = ", "completion": "3"}])
    exact, wide = tmp_path / "exact.jsonl", tmp_path / "wide.jsonl"
    args = select_args(root, tiny_model_dir, targets, str(exact), "--k", "48", "--exact")
    assert run_cli(args, capsys)[0] == 0
    args = select_args(root, tiny_model_dir, targets, str(wide), "--k", "48", "--ef-search", "64")
    assert run_cli(args, capsys)[0] == 0
    ids = [{json.loads(line)["id"] for line in p.read_text().splitlines()} for p in (exact, wide)]
    assert ids[0] == ids[1] and len(ids[0]) == 48
    args = select_args(root, tiny_model_dir, targets, str(wide), "--k", "3", "--nprobe", "2")
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "nprobe" in err


def test_cli_verify_recomputes_rows(tiny_model_dir, pool_path, warmup_dir, datastore_root, capsys):
    code, out, _ = run_cli(
        [
            "verify",
            "--datastore",
            str(datastore_root),
            "--model-dir",
            str(tiny_model_dir),
            "--pool",
            str(pool_path),
            "--warmup-dir",
            str(warmup_dir),
            "--sample",
            "5",
        ],
        capsys,
    )
    report = json.loads(out)
    assert code == 0 and report["ok"], report
    assert min(report["min_cosine"].values()) > 0.9999


def test_cli_verify_detects_corruption(tmp_path, datastore_root, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(datastore_root, copy)
    store = Datastore.open(copy)
    f = np.load(store.path / "shards/00000/features/checkpoint-6.npy", mmap_mode="r+")
    f[3] *= 2.0
    f.flush()
    del f
    code, out, _ = run_cli(["verify", "--datastore", str(copy)], capsys)
    report = json.loads(out)
    assert code == 1 and report["bad_checksums"] == ["shards/00000/features/checkpoint-6.npy"]
    assert any("not unit-norm near row 3" in p for p in report["problems"])


def test_cli_select_writes_ids_and_rows(
    tmp_path, tiny_model_dir, pool_path, datastore_root, capsys
):
    targets = write_jsonl(
        tmp_path / "t.jsonl",
        [{k: v for k, v in r.items() if k != "id"} for r in make_rows(2, seed=5, prefix="t-")[:2]],
    )
    out_ids = tmp_path / "sel.jsonl"
    code, _, err = run_cli(
        select_args(datastore_root, tiny_model_dir, targets, str(out_ids), "--k", "4"),
        capsys,
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out_ids.read_text().splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:]))
    out_rows = tmp_path / "rows.jsonl"
    code, _, _ = run_cli(
        select_args(
            datastore_root,
            tiny_model_dir,
            targets,
            str(out_rows),
            "--k",
            "4",
            "--pool",
            str(pool_path),
        ),
        capsys,
    )
    full = [json.loads(line) for line in out_rows.read_text().splitlines()]
    assert [r["id"] for r in full] == [r["id"] for r in rows] and all("task" in r for r in full)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"id": "a", "prompt": "x", "completion": "y"}\n{"id": "b", "prompt": \n',
            "pool.jsonl:2: malformed JSON",
        ),
        (
            '{"id": "a", "prompt": "x", "completion": "y"}\n'
            '{"id": "a", "prompt": "z", "completion": "w"}\n',
            "pool.jsonl:2: duplicate id 'a'",
        ),
        ('{"prompt": "x", "completion": "y"}\n', "pool.jsonl:1: missing 'id'"),
        ('{"id": "a", "prompt": "x", "completion": "  "}\n', "pool.jsonl:1: empty 'completion'"),
    ],
)
def test_cli_build_rejects_bad_pool(tmp_path, tiny_model_dir, warmup_dir, capsys, content, message):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(content)
    code, _, err = run_cli(build_args(tiny_model_dir, pool, warmup_dir, tmp_path / "ds"), capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_errors_unknown_checkpoint_empty_targets_missing_datastore(
    tmp_path, tiny_model_dir, pool_path, warmup_dir, datastore_root, capsys
):
    code, _, err = run_cli(
        build_args(
            tiny_model_dir,
            pool_path,
            warmup_dir,
            tmp_path / "ds",
            extra=["--checkpoints", "checkpoint-99"],
        ),
        capsys,
    )
    assert code == 2 and "checkpoint-99" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    code, _, err = run_cli(
        select_args(datastore_root, tiny_model_dir, empty, str(tmp_path / "o"), "--k", "1"),
        capsys,
    )
    assert code == 2 and "no target examples" in err
    code, _, err = run_cli(["info", "--datastore", str(tmp_path / "nope")], capsys)
    assert code == 2 and "no published datastore" in err
    code, _, err = run_cli(
        build_args(
            tiny_model_dir,
            pool_path,
            warmup_dir,
            tmp_path / "ds",
            extra=["--proj-kind", "sjlt", "--proj-dim", "250"],
        ),
        capsys,
    )
    assert code == 2 and "divisible" in err


def test_build_resumes_after_kill_with_identical_bytes(tmp_path, tiny_model_dir, warmup_dir):
    """SIGKILL a real build process mid-featurization, rerun the same command, compare bytes."""
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(30, seed=3, prefix="k-"))
    args = build_args(tiny_model_dir, pool, warmup_dir, tmp_path / "killed", batch_size=1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LESS_FLUSH_INTERVAL_S": "0"}
    cmd = [sys.executable, "-m", "indexer.cli", *args]
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    progress = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(
                (tmp_path / "killed" / ".staging").glob("*/progress/00000-checkpoint-6.json")
            )
            if found and json.loads(found[0].read_text())["batches_done"] >= 10:
                progress = found[0]
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert progress is not None, "build finished or stalled before it could be killed"
    assert not (tmp_path / "killed" / "CURRENT").exists()
    resumed = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at batch" in resumed.stderr
    clean = subprocess.run(
        [
            sys.executable,
            "-m",
            "indexer.cli",
            *build_args(tiny_model_dir, pool, warmup_dir, tmp_path / "clean", batch_size=1),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert clean.returncode == 0, clean.stderr
    a, b = Datastore.open(tmp_path / "killed"), Datastore.open(tmp_path / "clean")
    for name in a.checkpoint_names:
        assert (a.path / "shards/00000/features" / f"{name}.npy").read_bytes() == (
            b.path / "shards/00000/features" / f"{name}.npy"
        ).read_bytes()
    assert a.verify_checksums() == [] and a.ids == b.ids
