"""Crash safety of builds: ``less-index build`` and ``less-index append`` killed with SIGKILL at
seeded random points (progress-file growth or a timer) and rerun until they finish; ``verify``
passes, the features equal an uninterrupted run byte for byte, and a registry pointed at the
root all along only ever opens complete versions."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from indexer.cli import main
from indexer.datastore import Datastore, current_version, feature_file
from service.registry import Registry
from service.settings import ServiceSettings, hash_key
from tests.conftest import build_tiny_datastore, make_rows, write_jsonl
from tests.indexer.test_append import append, append_args
from tests.indexer.test_cli import build_args

REPO = Path(__file__).resolve().parents[2]
SEED = 20240611
KILLS = 3
RUN_TIMEOUT_S = 120
ENV = {**os.environ, "PYTHONPATH": str(REPO), "LESS_FLUSH_INTERVAL_S": "0"}


@dataclass
class Watch:
    """A registry over the root, reloading in a loop while the kills happen; its engine
    factory checks every version it is given is complete (checksums, ids, feature shapes)."""

    root: Path
    model_dir: Path
    opened: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def check(self, store: Datastore, config, device):
        bad = store.verify_checksums()
        if bad:
            self.problems.append(f"{store.version}: bad checksums {bad}")
        if len(store.ids) != store.n:
            self.problems.append(f"{store.version}: {len(store.ids)} ids, n={store.n}")
        for name in store.checkpoint_names:
            if store.features(name).shape != (store.n, store.manifest.features.dim):
                self.problems.append(f"{store.version}: {name} features of the wrong shape")
        self.opened.append(store.version)
        return object()  # stands for an engine: nothing here queries

    def run(self) -> None:
        settings = ServiceSettings(
            datastores={"ds": {"path": str(self.root), "model_dir": str(self.model_dir)}},
            teams={"t": {"key_sha256": [hash_key("k")], "datastores": ["ds"]}},
            jobs_dir=str(self.root.parent / "jobs"),
            device="cpu",
        )
        registry = Registry(settings, engine_factory=self.check)
        while not self.stop.is_set():
            result = registry.reload("ds")["ds"]
            if result.startswith("failed") and "missing CURRENT" not in result:
                self.problems.append(result)
            time.sleep(0.01)

    def __enter__(self) -> Watch:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


def batches_done(root: Path, pattern: str) -> int:
    total = 0
    for path in (root / ".staging").glob(f"*/progress/{pattern}"):
        try:
            total += json.loads(path.read_text())["batches_done"]
        except (OSError, ValueError, KeyError):
            pass  # replaced while read
    return total


def kill_points(rng: random.Random, total: int) -> list[tuple[str, float]]:
    """KILLS points: increasing numbers of flushed batches, then one on a timer (start-up,
    tokenizing or featurizing). The first kill lands on a run from scratch, so it always
    happens; later ones may find a fast machine already done ("finished first"), which is
    logged and still exercises a resume."""
    batches = sorted(rng.sample(range(2, total - 2), KILLS - 1))
    points: list[tuple[str, float]] = [("batches", b) for b in batches]
    points.append(("timer", rng.uniform(3.0, 7.0)))
    return points


def run_with_kills(
    cmd: list[str], root: Path, pattern: str, points, log: list[str], label: str
) -> None:
    """Runs ``cmd`` once per kill point, SIGKILLing it there, then once to the end."""
    for kind, value in points:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        start = time.monotonic()
        try:
            while proc.poll() is None and time.monotonic() - start < RUN_TIMEOUT_S:
                if kind == "timer" and time.monotonic() - start >= value:
                    break
                if kind == "batches" and batches_done(root, pattern) >= value:
                    break
                time.sleep(0.01)
        finally:
            finished = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        log.append(f"{label} {kind} {value:.2f}: {'finished first' if finished else 'killed'}")
    done = subprocess.run(
        cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr


def same_bytes(a: Datastore, b: Datastore) -> None:
    assert a.version == b.version and a.ids == b.ids
    for shard in a.shards:
        for name in a.checkpoint_names:
            rel = Path(shard.name) / feature_file(name)
            assert (a.path / rel).read_bytes() == (b.path / rel).read_bytes(), rel


def test_build_and_append_survive_sigkill_at_random_points(
    tmp_path, tiny_model_dir, warmup_dir, capsys
):
    rng = random.Random(SEED)
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(4, seed=5, prefix="c-"))  # 16 rows
    rows = write_jsonl(tmp_path / "new.jsonl", make_rows(2, seed=6, prefix="a-"))  # 8 rows
    killed, clean = tmp_path / "killed" / "ds", tmp_path / "clean" / "ds"
    n_checkpoints = len(list(warmup_dir.glob("checkpoint-*")))
    log: list[str] = []

    with Watch(killed, tiny_model_dir) as watch:
        build_cmd = [sys.executable, "-m", "indexer.cli"]
        build_cmd += build_args(tiny_model_dir, pool, warmup_dir, killed, batch_size=1)
        points = kill_points(rng, 16 * n_checkpoints)
        run_with_kills(build_cmd, killed, "*.json", points, log, "build")
        built = current_version(killed)
        # The append's shard is 00001; the build's progress files are gone once published.
        append_cmd = [sys.executable, "-m", "indexer.cli"]
        append_cmd += append_args(killed, tiny_model_dir, rows, warmup_dir)
        points = kill_points(rng, 8 * n_checkpoints)
        run_with_kills(append_cmd, killed, "00001-*.json", points, log, "append")
        deadline = time.monotonic() + 30
        while current_version(killed) not in watch.opened and time.monotonic() < deadline:
            time.sleep(0.05)
    for label in ("build", "append"):  # each command was really killed at least once
        assert any(line.startswith(label) and line.endswith("killed") for line in log), log
    assert watch.problems == [], watch.problems
    assert watch.opened[0] == built and watch.opened[-1] == current_version(killed), watch.opened
    assert set(watch.opened) <= {built, current_version(killed)}, watch.opened
    assert not (killed / ".staging").exists()

    # The uninterrupted reference, in process (the same code and config as the CLI's).
    build_tiny_datastore(clean, tiny_model_dir, pool, warmup_dir, batch_size=1)
    same_bytes(Datastore.open(killed, built), Datastore.open(clean))
    append(clean, tiny_model_dir, warmup_dir, rows)
    a, b = Datastore.open(killed), Datastore.open(clean)
    same_bytes(a, b)
    assert a.verify_checksums() == []
    capsys.readouterr()
    code = main(
        [
            "verify",
            "--datastore",
            str(killed),
            "--model-dir",
            str(tiny_model_dir),
            "--pool",
            str(pool),
            "--pool",
            str(rows),
            "--warmup-dir",
            str(warmup_dir),
            "--sample",
            "4",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], report
