"""Steered selections (filter, token budget, balance, near-duplicate guard, avoid, explain)
through the query engine equal slow reference computations over the stored features.

The references work from the spec's definitions, not from the engine's shortcuts: every score
is a mean of per-target inner products in float64 (never the mean query), the filter is a
Python loop over the pool file, balance is a literal round robin, the guard compares every
pair of rows.
"""

import json

import numpy as np
import pytest

from indexer.datastore import Datastore
from indexer.pool_metadata import Condition
from indexer.query import QueryEngine
from indexer.steered import Steering
from less_core.config import SelectionConfig
from less_core.data import Example
from less_core.errors import ConfigError, DataError
from tests.conftest import build_tiny_datastore, make_rows


@pytest.fixture(scope="module")
def engine(datastore_root, tiny_model_dir):
    return QueryEngine(Datastore.open(datastore_root), tiny_model_dir, "cpu")


@pytest.fixture(scope="module")
def pool_rows(pool_path):
    return {r["id"]: r for r in map(json.loads, pool_path.read_text().splitlines())}


def examples(tasks=("add", "rev"), prefix="t-"):
    rows = [r for r in make_rows(3, seed=99, prefix=prefix) if r["task"] in tasks]
    return [Example.from_dict({**r, "subtask": r["task"]}) for r in rows]


class Reference:
    """Float64 scores of every row from the stored features and raw target features."""

    def __init__(self, engine, targets, avoid=(), checkpoints=None, weight=1.0):
        store = engine.store
        self.names = list(checkpoints or store.checkpoint_names)
        lrs = {c.name: c.lr for c in store.manifest.checkpoints}
        self.w = np.array([lrs[n] for n in self.names]) / sum(lrs[n] for n in self.names)
        tok = engine.tokenize_targets(list(targets) + list(avoid))
        feats = engine.target_features([tok], self.names)[0]
        self.f = [np.asarray(store.features(n), dtype=np.float64) for n in self.names]
        self.t = [x.double().numpy()[: len(targets)] for x in feats]
        self.a = [x.double().numpy()[len(targets) :] for x in feats]
        self.labels = [e.subtask for e in targets]
        self.subtasks = list(dict.fromkeys(self.labels))
        n = store.n
        self.avoid_sim = np.zeros(n)
        if avoid:
            for c in range(len(self.names)):
                self.avoid_sim += self.w[c] * np.mean(self.f[c] @ self.a[c].T, axis=1)
        self.per_sub = np.zeros((n, len(self.subtasks)))
        for c in range(len(self.names)):
            for s, sub in enumerate(self.subtasks):
                idx = [i for i, label in enumerate(self.labels) if label == sub]
                self.per_sub[:, s] += self.w[c] * np.mean(self.f[c] @ self.t[c][idx].T, axis=1)
        self.per_sub -= weight * self.avoid_sim[:, None]
        self.score = self.per_sub.max(axis=1)

    def ranking(self, scores, mask=None):
        order = np.lexsort((np.arange(len(scores)), -scores))
        return [int(r) for r in order if mask is None or mask[r]]

    def similarity(self, a, b):
        return sum(self.w[c] * float(self.f[c][a] @ self.f[c][b]) for c in range(len(self.f)))


def test_filter_ranks_only_passing_rows(engine, pool_rows):
    exs = examples()
    ref = Reference(engine, exs)
    ids = engine.store.ids
    steering = Steering(filter={"task": Condition(in_=("rev", "count"))})
    sel = engine.select_many([engine.prepare(exs, SelectionConfig(k=7), steering=steering)])[0]
    mask = [pool_rows[i]["task"] in ("rev", "count") for i in ids]
    want = ref.ranking(ref.score, mask)[:7]
    assert sel.rows == want
    np.testing.assert_allclose(sel.scores, ref.score[want], atol=1e-5)
    assert sel.n_candidates == sum(mask)
    # fraction is a share of the rows that pass: 0.25 of 24
    frac = engine.select_many(
        [engine.prepare(exs, SelectionConfig(fraction=0.25), steering=steering)]
    )[0]
    assert len(frac.rows) == round(0.25 * sum(mask))


def test_filter_on_numeric_token_count(engine):
    exs = examples()
    ref = Reference(engine, exs)
    tokens = engine.store.metadata.n_tokens
    limit = int(np.median(tokens))
    steering = Steering(filter={"n_tokens": Condition(lte=limit)})
    sel = engine.select_many([engine.prepare(exs, SelectionConfig(k=5), steering=steering)])[0]
    assert sel.rows == ref.ranking(ref.score, tokens <= limit)[:5]


def test_token_budget_is_the_longest_prefix_within_budget(engine):
    exs = examples()
    ref = Reference(engine, exs)
    tokens = engine.store.metadata.n_tokens
    budget = int(tokens.sum() // 5)
    sel = engine.select_many(
        [engine.prepare(exs, SelectionConfig(), steering=Steering(token_budget=budget))]
    )[0]
    order = ref.ranking(ref.score)
    want, total = [], 0
    for r in order:
        if total + tokens[r] > budget:
            break
        want.append(r)
        total += int(tokens[r])
    assert sel.rows == want
    assert sel.n_tokens == total <= budget
    # with k as well, k caps the rows
    capped = engine.select_many(
        [engine.prepare(exs, SelectionConfig(k=2), steering=Steering(token_budget=budget))]
    )[0]
    assert capped.rows == want[:2]


@pytest.mark.parametrize("slack", [0, -1])
def test_token_budget_boundary(engine, slack):
    """A budget equal to the first m rows' tokens takes exactly m; one token less, m - 1."""
    exs = examples()
    ref = Reference(engine, exs)
    tokens = engine.store.metadata.n_tokens
    order = ref.ranking(ref.score)
    m = 5
    budget = int(tokens[order[:m]].sum()) + slack
    sel = engine.select_many(
        [engine.prepare(exs, SelectionConfig(), steering=Steering(token_budget=budget))]
    )[0]
    assert sel.rows == order[: m if slack == 0 else m - 1]


def test_balance_is_round_robin_over_subtask_rankings(engine):
    exs = examples(("add", "rev", "count"))
    ref = Reference(engine, exs)
    rankings = [ref.ranking(ref.per_sub[:, s]) for s in range(len(ref.subtasks))]
    k = 10
    want, source, cursors = [], [], [0] * len(rankings)
    while len(want) < k:
        for s, ranking in enumerate(rankings):
            if len(want) == k:
                break
            while ranking[cursors[s]] in want:
                cursors[s] += 1
            want.append(ranking[cursors[s]])
            source.append(ref.subtasks[s])
    sel = engine.select_many(
        [engine.prepare(exs, SelectionConfig(k=k), steering=Steering(balance="subtask"))]
    )[0]
    assert sel.rows == want
    assert sel.subtasks == source
    np.testing.assert_allclose(
        sel.scores, [ref.per_sub[r, ref.subtasks.index(s)] for r, s in zip(want, source)], atol=1e-5
    )
    # each subtask's share differs by at most one row
    counts = [sel.subtasks.count(s) for s in ref.subtasks]
    assert max(counts) - min(counts) <= 1


def test_avoid_subtracts_weighted_similarity(engine):
    exs, avoid = examples(("add",)), examples(("rev",), prefix="a-")
    ref = Reference(engine, exs, avoid, weight=0.5)
    sel = engine.select_many(
        [
            engine.prepare(
                exs, SelectionConfig(k=6), avoid=avoid, steering=Steering(avoid_weight=0.5)
            )
        ]
    )[0]
    want = ref.ranking(ref.score)[:6]
    assert sel.rows == want
    np.testing.assert_allclose(sel.scores, ref.score[want], atol=1e-5)
    # the avoid direction pushes 'rev' rows down compared with no avoid
    plain = engine.select_many([engine.prepare(exs, SelectionConfig(k=6))])[0]
    assert sum(i.startswith("p-rev") for i in sel.ids) <= sum(
        i.startswith("p-rev") for i in plain.ids
    )


@pytest.mark.parametrize("quantile", [50, 5])
def test_max_similarity_guard_is_greedy_over_the_full_ranking(engine, quantile):
    """At the 5th percentile most rows are refused: the first search (2k deep) runs out and
    the engine must search deeper to finish the same walk."""
    exs = examples()
    ref = Reference(engine, exs)
    order = ref.ranking(ref.score)
    sims = [ref.similarity(a, b) for a in order[:8] for b in order[:8] if a < b]
    threshold = float(np.percentile(sims, quantile))
    want = []
    for r in order:
        if all(ref.similarity(r, s) <= threshold for s in want):
            want.append(r)
        if len(want) == 6:
            break
    sel = engine.select_many(
        [engine.prepare(exs, SelectionConfig(k=6), steering=Steering(max_similarity=threshold))]
    )[0]
    assert sel.rows == want
    assert want != order[: len(want)]  # the guard did skip rows
    if quantile == 5:
        assert order.index(want[-1]) >= 12  # found beyond the first search's depth


def test_explanations_add_up_and_name_the_closest_target(engine, pool_rows):
    exs = examples(("add", "rev", "count"))
    avoid = examples(("upper",), prefix="a-")
    ref = Reference(engine, exs, avoid, weight=0.3)
    sel = engine.select_many(
        [
            engine.prepare(
                exs,
                SelectionConfig(k=8),
                avoid=avoid,
                steering=Steering(explain=True, avoid_weight=0.3),
            )
        ]
    )[0]
    assert len(sel.explanations) == 8
    for row, score, subtask, ex, row_id in zip(
        sel.rows, sel.scores, sel.subtasks, sel.explanations, sel.ids
    ):
        contributions = [c for _, _, c in ex.checkpoints]
        assert sum(contributions) == pytest.approx(score, abs=1e-5)
        assert [w for _, w, _ in ex.checkpoints] == pytest.approx(ref.w.tolist())
        by_subtask = dict(ex.subtasks)
        for s, name in enumerate(ref.subtasks):
            assert by_subtask[name] == pytest.approx(ref.per_sub[row, s], abs=1e-5)
        assert max(by_subtask, key=by_subtask.get) == subtask
        per_target = [
            sum(ref.w[c] * float(ref.f[c][row] @ ref.t[c][v]) for c in range(len(ref.names)))
            for v in range(len(exs))
        ]
        assert ex.closest_target == int(np.argmax(per_target))
        assert ex.closest_similarity == pytest.approx(max(per_target), abs=1e-5)
        assert ex.closest_target_id == exs[ex.closest_target].id
        assert ex.avoid_similarity == pytest.approx(ref.avoid_sim[row], abs=1e-5)
        assert ex.metadata["task"] == pool_rows[row_id]["task"]
        assert ex.n_tokens == int(engine.store.metadata.n_tokens[row])
        assert ex.preview


def test_explanation_with_mean_aggregate_and_one_checkpoint(engine):
    exs = examples(("add", "rev"))
    name = engine.store.checkpoint_names[-1]
    config = SelectionConfig(k=4, aggregate="mean", checkpoints=(name,))
    sel = engine.select_many([engine.prepare(exs, config, steering=Steering(explain=True))])[0]
    for score, ex in zip(sel.scores, sel.explanations):
        assert [n for n, _, _ in ex.checkpoints] == [name]
        assert ex.checkpoints[0][2] == pytest.approx(score, abs=1e-5)
        assert np.mean([s for _, s in ex.subtasks]) == pytest.approx(score, abs=1e-5)


def test_all_options_together_match_the_reference_walk(engine, pool_rows):
    exs = examples(("add", "rev", "count"))
    ref = Reference(engine, exs)
    ids = engine.store.ids
    tokens = engine.store.metadata.n_tokens
    mask = np.array([pool_rows[i]["task"] != "upper" for i in ids])
    budget = int(tokens[mask].sum() // 3)
    rankings = [ref.ranking(ref.per_sub[:, s], mask) for s in range(len(ref.subtasks))]
    threshold = 0.9
    want, taken, refused, cursors, total, done = [], set(), set(), [0] * 3, 0, False
    while not done:
        for s, ranking in enumerate(rankings):
            while cursors[s] < len(ranking):
                r = ranking[cursors[s]]
                cursors[s] += 1
                if r in taken or r in refused:
                    continue
                if any(ref.similarity(r, t) > threshold for t in want):
                    refused.add(r)
                    continue
                break
            else:
                continue
            if total + tokens[r] > budget:
                done = True
                break
            want.append(r)
            taken.add(r)
            total += int(tokens[r])
        if all(c >= len(rk) for c, rk in zip(cursors, rankings)):
            done = True
    steering = Steering(
        filter={"task": Condition(not_in=("upper",))},
        token_budget=budget,
        balance="subtask",
        max_similarity=threshold,
        explain=True,
    )
    sel = engine.select_many([engine.prepare(exs, SelectionConfig(), steering=steering)])[0]
    assert sel.rows == want
    assert sel.n_tokens == total
    assert all(pool_rows[i]["task"] != "upper" for i in sel.ids)


def test_steered_requests_batched_equal_alone(engine):
    a = engine.prepare(
        examples(("add",)),
        SelectionConfig(k=4),
        steering=Steering(filter={"task": Condition(eq="add")}, explain=True),
    )
    b = engine.prepare(
        examples(("rev", "count")), SelectionConfig(k=6), steering=Steering(balance="subtask")
    )
    c = engine.prepare(examples(("count",)), SelectionConfig(k=3))
    together = engine.select_many([a, b, c])
    for query, got in zip([a, b, c], together):
        alone = engine.select_many([query])[0]
        assert (got.rows, got.scores, got.subtasks) == (alone.rows, alone.scores, alone.subtasks)


@pytest.mark.parametrize(
    "steering, config, message",
    [
        (Steering(filter={"task": Condition(eq="nope")}), SelectionConfig(k=1), "matches none"),
        (Steering(filter={"colour": Condition(eq="red")}), SelectionConfig(k=1), "colour"),
        (Steering(filter={"task": Condition(gt=3)}), SelectionConfig(k=1), "task"),
        (Steering(filter={"task": Condition(eq="add")}), SelectionConfig(k=13), "pass the filter"),
        (Steering(token_budget=1), SelectionConfig(), "smallest eligible row"),
        (Steering(max_similarity=0.5), SelectionConfig(k=11), "comparisons"),
    ],
)
def test_steering_errors_are_clear(engine, steering, config, message, monkeypatch):
    # k = 11 rows of 2 checkpoints x 256 values need 28,160 comparisons: over a budget of 20,000
    monkeypatch.setattr("indexer.steered.GUARD_MAX_WORK", 20_000)
    with pytest.raises((DataError, ConfigError), match=message):
        engine.prepare(examples(), config, steering=steering)


def test_avoid_errors_name_the_avoid_example(engine):
    bad = Example(id="x", messages=({"role": "assistant", "content": "hi"},))
    with pytest.raises(DataError, match=r"avoid\[0\]"):
        engine.prepare(examples(), SelectionConfig(k=1), avoid=[bad])


def test_steering_config_checks_itself():
    with pytest.raises(ConfigError):
        Steering(token_budget=0)
    with pytest.raises(ConfigError):
        Steering(balance="tasks")
    with pytest.raises(ConfigError):
        Steering(max_similarity=1.5)
    with pytest.raises(ConfigError):
        Steering(avoid_weight=-1)


@pytest.fixture(scope="module")
def ivf_engine(tmp_path_factory, tiny_model_dir, pool_path, warmup_dir):
    """The same rows in 2 shards of 24 with approximate IVF indexes."""
    root = tmp_path_factory.mktemp("ivf-steered") / "tiny"
    build_tiny_datastore(
        root, tiny_model_dir, pool_path, warmup_dir, index_factory="IVF4,Flat", shard_rows=24
    )
    return QueryEngine(Datastore.open(root), tiny_model_dir, "cpu")


def test_filtered_request_on_an_approximate_sharded_datastore_is_exact(ivf_engine, pool_rows):
    """An index proposes candidates before any filter, so filtered requests scan exactly."""
    exs = examples()
    ref = Reference(ivf_engine, exs)
    mask = [pool_rows[i]["task"] == "count" for i in ivf_engine.store.ids]
    steering = Steering(filter={"task": Condition(eq="count")}, explain=True)
    sel = ivf_engine.select_many(
        [ivf_engine.prepare(exs, SelectionConfig(k=12), steering=steering)]
    )[0]
    assert sel.rows == ref.ranking(ref.score, mask)[:12]
    assert [e.metadata["task"] for e in sel.explanations] == ["count"] * 12


def test_guard_work_is_bounded_during_the_walk(engine, monkeypatch):
    """A budget-only request has no k to check up front: the guard stops itself mid-walk."""
    monkeypatch.setattr("indexer.steered.GUARD_MAX_WORK", 5_000)
    query = engine.prepare(
        examples(), SelectionConfig(), steering=Steering(token_budget=10_000, max_similarity=0.99)
    )
    with pytest.raises(ConfigError, match="comparisons"):
        engine.select_many([query])
