"""Approximate FAISS indexes: opt-in at build, candidates re-ranked exactly, recall measured."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.datastore import Datastore, index_sizes
from indexer.query import QueryEngine
from indexer.search import SearchParams
from indexer.verify import index_recall, verify_datastore
from less_core.config import SelectionConfig
from less_core.errors import ConfigError
from tests.conftest import build_tiny_datastore
from tests.indexer.test_selection import brute_force, targets


def _build(root, model_dir, pool, warmup, **build) -> Datastore:
    return Datastore.open(build_tiny_datastore(root, model_dir, pool, warmup, **build))


@pytest.fixture(scope="module")
def ivf(tmp_path_factory, tiny_model_dir, pool_path, warmup_dir) -> Datastore:
    """48 rows in 2 shards of 24, each with its own IVF4 index."""
    root = tmp_path_factory.mktemp("ivf") / "tiny"
    return _build(
        root, tiny_model_dir, pool_path, warmup_dir, index_factory="IVF4,Flat", shard_rows=24
    )


@pytest.fixture(scope="module")
def hnsw(tmp_path_factory, tiny_model_dir, pool_path, warmup_dir) -> Datastore:
    root = tmp_path_factory.mktemp("hnsw") / "tiny"
    return _build(root, tiny_model_dir, pool_path, warmup_dir, index_factory="HNSW8")


def test_indexes_are_written_per_shard_and_sized(ivf, datastore_root):
    assert ivf.manifest.index.factory == "IVF4,Flat" and not ivf.manifest.build.exact
    paths = [ivf.index_path(s) for s in ivf.shards]
    assert all(p is not None and p.is_file() for p in paths)
    sizes = index_sizes(ivf)
    assert sizes.index_bytes == sum(p.stat().st_size for p in paths if p is not None) > 0
    assert sizes.expected_ram_bytes > sizes.index_bytes
    exact = Datastore.open(datastore_root)
    assert exact.index_path(exact.shards[0]) is None and index_sizes(exact).index_bytes == 0


def _engine(store, model_dir):
    return QueryEngine(store, model_dir, "cpu")


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_returned_scores_are_exact_and_full_probe_equals_brute_force(
    ivf, tiny_model_dir, aggregate
):
    engine = _engine(ivf, tiny_model_dir)
    exs = targets()
    names = ivf.checkpoint_names
    feats = engine.target_features([engine.tokenize_targets(exs)], names)[0]
    order, agg, _, _ = brute_force(ivf, feats, [e.subtask for e in exs], names, aggregate)
    config = SelectionConfig(k=5, aggregate=aggregate)
    # Default nprobe (1 of 4 lists): maybe not the true top-5, but each score is the exact one.
    rough = engine.select(exs, config)
    np.testing.assert_allclose(rough.scores, agg[rough.rows], atol=1e-5)
    assert rough.scores == sorted(rough.scores, reverse=True)
    # Every list probed and every row a candidate: the exact answer.
    full = engine.select(exs, config, SearchParams(nprobe=4, candidates=10))
    assert full.rows == order[:5].tolist()
    exact = engine.select(exs, config, SearchParams(exact=True))
    assert exact.rows == order[:5].tolist()


def test_search_options_do_not_leak_between_requests(ivf, tiny_model_dir):
    engine = _engine(ivf, tiny_model_dir)
    config = SelectionConfig(k=5)
    before = engine.select(targets(), config)
    engine.select(targets(), config, SearchParams(nprobe=4))
    after = engine.select(targets(), config)
    assert (before.rows, before.scores) == (after.rows, after.scores)


def test_hnsw_takes_ef_search_and_refuses_nprobe(hnsw, tiny_model_dir):
    engine = _engine(hnsw, tiny_model_dir)
    wide = engine.select(targets(), SelectionConfig(k=48), SearchParams(ef_search=64))
    exact = engine.select(targets(), SelectionConfig(k=48), SearchParams(exact=True))
    assert sorted(wide.rows) == sorted(exact.rows) == list(range(48))
    with pytest.raises(ConfigError, match="nprobe"):
        engine.select(targets(), SelectionConfig(k=3), SearchParams(nprobe=2))


def test_verify_reports_recall_against_exact(ivf):
    low = index_recall(ivf, ks=[5], params=SearchParams(nprobe=1, candidates=1))
    full = index_recall(ivf, ks=[5], params=SearchParams(nprobe=4, candidates=10))
    assert full == {"k=5": 1.0}
    assert 0.0 < low["k=5"] <= 1.0
    report = verify_datastore(ivf)
    assert report.ok
    assert set(report.recall) == {"k=2", "k=1"}  # the default 5 % of 48 rows, and 1 %
    assert all(0.0 < r <= 1.0 for r in report.recall.values())
