"""Row shards: built, read and searched as one datastore; format-1 datastores still open."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from indexer.datastore import MANIFEST, Datastore, ShardedRows, shard_bounds
from indexer.manifest import Manifest
from indexer.query import QueryEngine
from less_core.config import SelectionConfig
from less_core.errors import IntegrityError
from tests.indexer.test_selection import brute_force, targets


@pytest.fixture(scope="module")
def sharded(sharded_datastore_root) -> Datastore:
    return Datastore.open(sharded_datastore_root)


@pytest.fixture(scope="module")
def single(datastore_root) -> Datastore:
    return Datastore.open(datastore_root)


def test_shard_bounds_tile_the_rows():
    assert shard_bounds(48, 20) == [(0, 20), (20, 40), (40, 48)]
    assert shard_bounds(48, None) == [(0, 48)]
    assert shard_bounds(40, 20) == [(0, 20), (20, 40)]


def test_sharded_build_has_the_same_rows_and_features(sharded, single):
    assert [(s.name, s.start, s.n) for s in sharded.shards] == [
        ("shards/00000", 0, 20),
        ("shards/00001", 20, 20),
        ("shards/00002", 40, 8),
    ]
    assert sharded.ids == single.ids
    assert sharded.manifest.ids_sha256 == single.manifest.ids_sha256
    for name in single.checkpoint_names:
        a = np.asarray(sharded.features(name)[:], dtype=np.float64)
        b = np.asarray(single.features(name), dtype=np.float64)
        # Batches are formed within a shard, so padding (and BLAS blocking) differs from the
        # one-shard build: equal up to float32 rounding, not bit for bit.
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert sharded.verify_checksums() == []


def test_sharded_rows_index_like_one_array(sharded):
    name = sharded.checkpoint_names[0]
    parts = sharded.shard_features(name)
    whole = np.concatenate([np.asarray(p) for p in parts])
    view = sharded.features(name)
    assert isinstance(view, ShardedRows) and view.shape == whole.shape and len(view) == 48
    rows = np.array([47, 0, 19, 20, 39, 40, 3])
    np.testing.assert_array_equal(view[rows], whole[rows])
    np.testing.assert_array_equal(view[15:45], whole[15:45])
    np.testing.assert_array_equal(view[21], whole[21])


@pytest.mark.parametrize("aggregate", ["max", "mean"])
@pytest.mark.parametrize("k", [1, 7, 48])
def test_sharded_selection_equals_brute_force(sharded, tiny_model_dir, k, aggregate):
    engine = QueryEngine(sharded, tiny_model_dir, "cpu")
    exs = targets()
    sel = engine.select(exs, SelectionConfig(k=k, aggregate=aggregate))
    names = sharded.checkpoint_names
    feats = engine.target_features([engine.tokenize_targets(exs)], names)[0]
    order, agg, _, _ = brute_force(sharded, feats, [e.subtask for e in exs], names, aggregate)
    assert sel.rows == order[:k].tolist()
    np.testing.assert_allclose(sel.scores, agg[order[:k]], atol=1e-5)
    assert sel.ids == [sharded.ids[r] for r in sel.rows]


def _as_format_1(store: Datastore, dest):
    """A copy of a one-shard format-2 version laid out as format 1 wrote it."""
    shutil.copytree(store.root, dest)
    version_dir = dest / "versions" / store.version
    shard_dir = version_dir / store.shards[0].name
    for item in shard_dir.iterdir():
        shutil.move(str(item), version_dir / item.name)
    shutil.rmtree(version_dir / "shards")
    raw = json.loads((version_dir / MANIFEST).read_text())
    raw["format_version"] = 1
    del raw["shards"]
    raw["index"]["file"] = None
    (version_dir / MANIFEST).write_text(json.dumps(raw))
    return dest


def test_format_1_datastores_open_and_select_the_same(single, tiny_model_dir, tmp_path):
    old = Datastore.open(_as_format_1(single, tmp_path / "old"))
    assert old.manifest.format_version == 1
    assert [(s.name, s.start, s.n) for s in old.shards] == [("", 0, 48)]
    assert old.ids == single.ids
    config = SelectionConfig(k=5)
    got = QueryEngine(old, tiny_model_dir, "cpu").select(targets(), config)
    want = QueryEngine(single, tiny_model_dir, "cpu").select(targets(), config)
    assert (got.ids, got.scores) == (want.ids, want.scores)


def test_manifest_missing_or_inconsistent_fields_are_refused(single, tmp_path):
    raw = json.loads((single.path / MANIFEST).read_text())
    broken = tmp_path / "m.json"
    broken.write_text(json.dumps({k: v for k, v in raw.items() if k != "checkpoints"}))
    with pytest.raises(IntegrityError, match="invalid manifest: checkpoints: Field required"):
        Manifest.load(broken)
    raw["shards"][0]["n"] = 40
    broken.write_text(json.dumps(raw))
    with pytest.raises(IntegrityError, match="shards hold 40 rows, manifest says n=48"):
        Manifest.load(broken)
    broken.write_text(json.dumps({**raw, "format_version": 9}))
    with pytest.raises(IntegrityError, match="unsupported datastore format 9"):
        Manifest.load(broken)
    broken.write_text("{not json")
    with pytest.raises(IntegrityError, match="unreadable manifest"):
        Manifest.load(broken)
