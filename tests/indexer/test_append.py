"""``less-index append``: new rows as a new version, old shards linked, only new rows featurized."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from indexer import build as build_module
from indexer.append import AppendRequest, append_rows
from indexer.build import BuildRequest, build_datastore
from indexer.cli import main
from indexer.datastore import Datastore, current_version, feature_file
from indexer.model_io import ADAPTER_WEIGHTS, load_tokenizer
from indexer.query import QueryEngine
from less_core.config import SelectionConfig
from less_core.data import Example, tokenize_example
from less_core.featurize import Featurizer
from tests.conftest import BUILD, PROJ, TOKENS, make_rows, write_jsonl
from tests.indexer.test_selection import brute_force, targets

# A row as long as this has its response truncated away at max_length=64: skipped, recorded.
TOO_LONG = {"id": "n-too-long", "prompt": "add " * 100 + "= ", "completion": "1"}


def new_rows(n_per_task: int = 3, prefix: str = "n-") -> list[dict]:
    return make_rows(n_per_task, seed=11, prefix=prefix)


def copy_store(root: Path, dest: Path) -> Path:
    """A private copy of a session datastore (appending publishes into the root it is given)."""
    shutil.copytree(root, dest)
    return dest


def append(root: Path, model_dir, warmup_dir, rows_file: Path, **kwargs) -> Path:
    return append_rows(AppendRequest(root, Path(model_dir), rows_file, Path(warmup_dir), **kwargs))


def append_args(root, model_dir, rows_file, warmup_dir, *extra) -> list[str]:
    return [
        "append",
        "--datastore",
        str(root),
        "--model-dir",
        str(model_dir),
        "--pool",
        str(rows_file),
        "--warmup-dir",
        str(warmup_dir),
        *extra,
    ]


class FeaturizerSpy:
    """Records the token sequences of every training row featurized (Adam featurizers only)."""

    def __init__(self, monkeypatch, fail_after: int | None = None):
        self.seen: list[tuple[int, ...]] = []
        self.calls = 0
        original = Featurizer.__call__
        spy = self

        def wrapped(featurizer, batch):
            if featurizer.kind == "adam":
                spy.calls += 1
                if fail_after is not None and spy.calls > fail_after:
                    raise KeyboardInterrupt  # as a kill would, between two flushed batches
                for ids, mask in zip(batch.input_ids.cpu(), batch.attention_mask.cpu()):
                    spy.seen.append(tuple(ids[mask.bool()].tolist()))
            return original(featurizer, batch)

        monkeypatch.setattr(Featurizer, "__call__", wrapped)


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("new") / "new.jsonl", new_rows() + [TOO_LONG])


@pytest.fixture(scope="module")
def appended(tmp_path_factory, datastore_root, tiny_model_dir, warmup_dir, rows_file):
    """(base, appended, featurized token sequences) on a copy of the tiny datastore."""
    root = copy_store(datastore_root, tmp_path_factory.mktemp("append") / "tiny")
    base = Datastore.open(root)
    with pytest.MonkeyPatch.context() as mp:
        spy = FeaturizerSpy(mp)
        append(root, tiny_model_dir, warmup_dir, rows_file, device="cpu")
    return base, Datastore.open(root), spy.seen


@pytest.fixture(scope="module")
def appended_engine(appended, tiny_model_dir) -> QueryEngine:
    return QueryEngine(appended[1], tiny_model_dir, "cpu")


@pytest.fixture(scope="module")
def fresh_full(tmp_path_factory, tiny_model_dir, pool_path, warmup_dir, rows_file) -> Datastore:
    """A full build of the base pool + the new rows in one go (the reference for new rows)."""
    combined = tmp_path_factory.mktemp("full") / "pool+new.jsonl"
    combined.write_text(pool_path.read_text() + rows_file.read_text())
    root = tmp_path_factory.mktemp("full-ds") / "tiny"
    build_datastore(
        BuildRequest(
            tiny_model_dir,
            combined,
            warmup_dir,
            root,
            "tiny-llama",
            projection=PROJ,
            build=BUILD,
            tokenization=TOKENS,
        )
    )
    return Datastore.open(root)


def test_append_publishes_a_new_version_with_the_rows_after_the_old(appended, rows_file):
    base, new, _ = appended
    assert new.version != base.version and current_version(new.root) == new.version
    n_new = len(new_rows())
    assert new.n == base.n + n_new
    assert new.ids == base.ids + [r["id"] for r in new_rows()]
    assert [(s.name, s.start, s.n) for s in new.shards] == [
        ("shards/00000", 0, base.n),
        ("shards/00001", base.n, n_new),
    ]
    m = new.manifest
    assert (m.checkpoints, m.projector, m.layout, m.lora, m.build, m.tokenization) == (
        base.manifest.checkpoints,
        base.manifest.projector,
        base.manifest.layout,
        base.manifest.lora,
        base.manifest.build,
        base.manifest.tokenization,
    )
    assert m.pool == base.manifest.pool
    [record] = m.appended
    assert (record.file, record.base_version, record.start, record.n, record.n_skipped) == (
        rows_file.name,
        base.version,
        base.n,
        n_new,
        1,
    )
    assert m.n_skipped == base.manifest.n_skipped + 1
    skipped = [json.loads(line) for line in (new.path / "skipped.jsonl").read_text().splitlines()]
    assert skipped[-1]["id"] == TOO_LONG["id"] and "truncated away" in skipped[-1]["reason"]
    assert {"link_s", "tokenize_s", "total_s"} <= set(m.timings)
    assert new.verify_checksums() == []


def test_old_shards_are_hard_links_to_the_base_files(appended):
    """(a) the old part is the base's bytes, shared on disk; (f) the base is untouched."""
    base, new, _ = appended
    old_files = [feature_file(c) for c in base.checkpoint_names] + ["ids.txt"]
    for name in old_files:
        a, b = base.path / "shards/00000" / name, new.path / "shards/00000" / name
        assert a.read_bytes() == b.read_bytes()
        assert os.stat(a).st_ino == os.stat(b).st_ino and os.stat(a).st_nlink >= 2
    for c in base.checkpoint_names:
        a, b = (
            base.path / "adapters" / c / ADAPTER_WEIGHTS,
            new.path / "adapters" / c / ADAPTER_WEIGHTS,
        )
        assert os.stat(a).st_ino == os.stat(b).st_ino
    again = Datastore.open(base.root, base.version)
    assert again.verify_checksums() == [] and again.manifest == base.manifest


def test_only_the_new_rows_were_featurized(appended, tiny_model_dir, rows_file):
    """(b) every featurized row is a new row, each once per checkpoint; no base row again."""
    base, new, seen = appended
    tokenizer = load_tokenizer(tiny_model_dir)
    tokens = {
        r["id"]: tuple(tokenize_example(tokenizer, Example.from_dict(r), 64).input_ids)
        for r in new_rows()
    }
    n_ckpt = len(base.checkpoint_names)
    assert len(seen) == len(tokens) * n_ckpt
    assert sorted(seen) == sorted(list(tokens.values()) * n_ckpt)


def test_new_rows_equal_a_fresh_full_build(appended, fresh_full):
    """(c) the appended rows' features are those of a full build over base + new rows."""
    _, new, _ = appended
    assert fresh_full.ids == new.ids and fresh_full.n == new.n
    for name in new.checkpoint_names:
        a = np.asarray(new.features(name)[:], dtype=np.float64)
        b = np.asarray(fresh_full.features(name), dtype=np.float64)
        # Other batches (padding, BLAS blocking) than the one-shard build: float32 rounding.
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("aggregate", ["max", "mean"])
@pytest.mark.parametrize("k", [1, 7, 60])
def test_selection_on_the_appended_version_equals_brute_force(appended_engine, k, aggregate):
    """(d) exact search over the linked + new shards equals numpy over the stored features."""
    engine = appended_engine
    store = engine.store
    exs = targets()
    sel = engine.select(exs, SelectionConfig(k=k, aggregate=aggregate))
    names = store.checkpoint_names
    feats = engine.target_features([engine.tokenize_targets(exs)], names)[0]
    order, agg, _, _ = brute_force(store, feats, [e.subtask for e in exs], names, aggregate)
    assert sel.rows == order[:k].tolist()
    np.testing.assert_allclose(sel.scores, agg[order[:k]], atol=1e-5)
    assert sel.ids == [store.ids[r] for r in sel.rows]
    if k == 60:
        assert any(i.startswith("n-") for i in sel.ids)


def test_same_append_twice_is_the_same_version(appended, tiny_model_dir, warmup_dir, rows_file):
    base, new, _ = appended
    versions = sorted(p.name for p in (new.root / "versions").iterdir())
    # Default base is CURRENT (the appended version itself): recognised, nothing redone.
    assert append(new.root, tiny_model_dir, warmup_dir, rows_file) == new.path
    # Explicitly onto the base again: the same version name, already published.
    assert append(new.root, tiny_model_dir, warmup_dir, rows_file, version=base.version) == new.path
    assert sorted(p.name for p in (new.root / "versions").iterdir()) == versions
    assert current_version(new.root) == new.version
    assert not (new.root / ".staging").exists()


def test_append_respects_shard_rows(tmp_path, sharded_datastore_root, tiny_model_dir, warmup_dir):
    root = copy_store(sharded_datastore_root, tmp_path / "sharded")
    base = Datastore.open(root)
    rows = new_rows(6)  # 24 rows -> shards of 20 + 4 after the base's 20 + 20 + 8
    append(root, tiny_model_dir, warmup_dir, write_jsonl(tmp_path / "new.jsonl", rows))
    new = Datastore.open(root)
    assert [(s.name, s.start, s.n) for s in new.shards] == [
        ("shards/00000", 0, 20),
        ("shards/00001", 20, 20),
        ("shards/00002", 40, 8),
        ("shards/00003", 48, 20),
        ("shards/00004", 68, 4),
    ]
    for old, linked in zip(base.shards, new.shards):
        for c in base.checkpoint_names:
            a, b = base.shard_dir(old) / feature_file(c), new.shard_dir(linked) / feature_file(c)
            assert os.stat(a).st_ino == os.stat(b).st_ino
    assert new.ids == base.ids + [r["id"] for r in rows] and new.verify_checksums() == []


def test_approximate_index_is_built_for_new_shards_only(
    tmp_path, tiny_model_dir, pool_path, warmup_dir
):
    import faiss

    root = tmp_path / "hnsw"
    build_datastore(
        BuildRequest(
            tiny_model_dir,
            pool_path,
            warmup_dir,
            root,
            projection=PROJ,
            build=replace(BUILD, index_factory="HNSW8"),
            tokenization=TOKENS,
        )
    )
    base = Datastore.open(root)
    append(root, tiny_model_dir, warmup_dir, write_jsonl(tmp_path / "new.jsonl", new_rows()))
    new = Datastore.open(root)
    old_index, new_indexes = new.index_path(new.shards[0]), new.index_path(new.shards[1])
    assert os.stat(old_index).st_ino == os.stat(base.index_path(base.shards[0])).st_ino
    index = faiss.read_index(str(new_indexes))
    assert index.ntotal == new.shards[1].n
    assert index.d == PROJ.dim * len(new.checkpoint_names)
    assert new.verify_checksums() == []


def test_copies_when_hard_links_fail(tmp_path, datastore_root, tiny_model_dir, warmup_dir, caplog):
    root = copy_store(datastore_root, tmp_path / "tiny")
    base = Datastore.open(root)

    def no_links(src, dst):
        raise OSError(18, "Invalid cross-device link")

    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.WARNING):
        mp.setattr(os, "link", no_links)
        append(root, tiny_model_dir, warmup_dir, write_jsonl(tmp_path / "n.jsonl", new_rows(1)))
    new = Datastore.open(root)
    assert "cannot hard-link" in caplog.text
    name = feature_file(base.checkpoint_names[0])
    a, b = base.path / "shards/00000" / name, new.path / "shards/00000" / name
    assert a.read_bytes() == b.read_bytes() and os.stat(a).st_ino != os.stat(b).st_ino
    assert new.verify_checksums() == []


def test_interrupted_append_resumes_with_identical_bytes(
    tmp_path, datastore_root, tiny_model_dir, warmup_dir, monkeypatch, capsys, caplog
):
    """Stopped after two flushed batches, the same command continues and equals a clean run."""
    rows_file = write_jsonl(tmp_path / "new.jsonl", new_rows(8))  # 32 rows: 4 batches of 8
    killed = copy_store(datastore_root, tmp_path / "killed")
    clean = copy_store(datastore_root, tmp_path / "clean")
    base_version = current_version(killed)
    monkeypatch.setattr(build_module, "FLUSH_INTERVAL_S", 0.0)
    with pytest.MonkeyPatch.context() as mp:
        FeaturizerSpy(mp, fail_after=2)
        with pytest.raises(KeyboardInterrupt):
            append(killed, tiny_model_dir, warmup_dir, rows_file)
    assert current_version(killed) == base_version  # nothing published
    [progress] = (killed / ".staging").glob("*/progress/00001-checkpoint-6.json")
    assert json.loads(progress.read_text())["batches_done"] == 2
    with caplog.at_level(logging.INFO):
        code = main(append_args(killed, tiny_model_dir, rows_file, warmup_dir))
    assert code == 0, capsys.readouterr().err
    assert "resuming at batch 2/4" in caplog.text
    append(clean, tiny_model_dir, warmup_dir, rows_file)
    a, b = Datastore.open(killed), Datastore.open(clean)
    assert a.version == b.version
    for name in a.checkpoint_names:
        f = "shards/00001/" + feature_file(name)
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes()
    assert a.verify_checksums() == [] and a.ids == b.ids


def _other_warmup(warmup_dir: Path, dest: Path) -> Path:
    """The warmup checkpoints with one adapter's weights nudged (a different warmup run)."""
    shutil.copytree(warmup_dir, dest)
    path = dest / "checkpoint-6" / ADAPTER_WEIGHTS
    weights = load_file(str(path))
    save_file({k: v + 1e-3 * torch.ones_like(v) for k, v in weights.items()}, str(path))
    return dest


def test_cli_append_errors_are_clear(tmp_path, datastore_root, tiny_model_dir, warmup_dir, capsys):
    """(e) duplicate ids, other warmup checkpoints, an empty file: exit 2, one clear line."""
    root = copy_store(datastore_root, tmp_path / "tiny")
    base = Datastore.open(root)
    fresh = new_rows(1)
    dupes = write_jsonl(
        tmp_path / "dupes.jsonl",
        fresh + [{**r, "id": i} for r, i in zip(new_rows(2), base.ids[:7])],
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    other = _other_warmup(warmup_dir, tmp_path / "other-warmup")
    missing = tmp_path / "missing-warmup"
    shutil.copytree(warmup_dir, missing)
    shutil.rmtree(missing / "checkpoint-12")
    rows = write_jsonl(tmp_path / "rows.jsonl", fresh)
    cases = [
        (dupes, warmup_dir, f"7 id(s) already in datastore version {base.version}: 'p-add-0'"),
        (empty, warmup_dir, "no rows to append (the file is empty)"),
        (rows, other, "checkpoint-6: adapter weights differ from the checkpoint"),
        (rows, missing, "lacks checkpoint(s) ['checkpoint-12']"),
    ]
    for rows_file, warmup, message in cases:
        code = main(append_args(root, tiny_model_dir, rows_file, warmup))
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (message, err)
        assert err.startswith("less-index append: error: ")
    assert "(and 2 more)" in main_err(root, tiny_model_dir, dupes, warmup_dir, capsys)
    # Nothing was published or left half-done; the base still verifies.
    assert current_version(root) == base.version
    assert sorted(p.name for p in (root / "versions").iterdir()) == [base.version]
    assert not (root / ".staging").exists()
    assert Datastore.open(root).verify_checksums() == []


def main_err(root, model_dir, rows_file, warmup_dir, capsys) -> str:
    main(append_args(root, model_dir, rows_file, warmup_dir))
    return capsys.readouterr().err


def test_verify_recomputes_appended_rows_given_every_row_file(
    tmp_path, datastore_root, tiny_model_dir, warmup_dir, pool_path
):
    from indexer.verify import verify_datastore
    from less_core.errors import IntegrityError

    root = copy_store(datastore_root, tmp_path / "ds")
    rows_file = write_jsonl(tmp_path / "new.jsonl", new_rows())
    new = Datastore.open(append(root, tiny_model_dir, warmup_dir, rows_file).parent.parent)
    kwargs = dict(model_dir=tiny_model_dir, warmup_dir=warmup_dir, sample=new.n, device="cpu")
    report = verify_datastore(new, pool_path=[rows_file, pool_path], **kwargs)
    assert report.ok, report.problems
    assert min(report.min_cosine.values()) > 0.999
    with pytest.raises(IntegrityError, match="also give the row file.*new.jsonl"):
        verify_datastore(new, pool_path=pool_path, **kwargs)
    stray = write_jsonl(tmp_path / "stray.jsonl", new_rows(prefix="s-"))
    with pytest.raises(IntegrityError, match="stray.jsonl: neither the pool nor an appended"):
        verify_datastore(new, pool_path=[pool_path, rows_file, stray], **kwargs)
