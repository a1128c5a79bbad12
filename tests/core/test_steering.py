"""The pure steering pieces: avoid folding, the walk over rankings, the guard, explanations."""

import numpy as np
import pytest
import torch

from less_core.errors import ConfigError
from less_core.steering import (
    GuardBudgetError,
    NearDuplicateGuard,
    Ranking,
    explain_rows,
    fold_avoid,
    scoring_queries,
    walk_rankings,
    weighted_concat,
)


def ranking(rows, complete=True):
    rows = np.asarray(rows, dtype=np.int64)
    return Ranking(rows, -np.arange(len(rows), dtype=np.float64), complete)


def test_fold_avoid_is_an_inner_product_identity():
    g = torch.Generator().manual_seed(0)
    q, a, f = (
        torch.randn(3, 8, generator=g),
        torch.randn(8, generator=g),
        torch.randn(5, 8, generator=g),
    )
    folded = fold_avoid(q, a, 0.7)
    np.testing.assert_allclose(f @ folded.T, f @ q.T - 0.7 * (f @ a)[:, None], atol=1e-6)
    assert fold_avoid(q, None, 0.7) is q
    with pytest.raises(ConfigError):
        fold_avoid(q, torch.zeros(7), 1.0)


def test_walk_round_robin_skips_taken_rows():
    walk = walk_rankings([ranking([1, 2, 3, 4]), ranking([1, 5, 2, 6])], k=5)
    assert walk.rows == [1, 5, 2, 6, 3]
    assert walk.source == [0, 1, 0, 1, 0]
    assert not walk.needs_more


def test_walk_passes_over_a_spent_complete_ranking():
    walk = walk_rankings([ranking([1]), ranking([2, 3, 4])], k=4)
    assert walk.rows == [1, 2, 3, 4]


def test_walk_asks_for_more_when_an_incomplete_ranking_runs_out():
    walk = walk_rankings([ranking([1, 2], complete=False)], k=3)
    assert walk.needs_more and walk.rows == [1, 2]


def test_walk_stops_at_the_first_row_over_the_budget():
    tokens = np.array([0, 5, 9, 1, 1])
    walk = walk_rankings([ranking([1, 2, 3, 4])], k=4, tokens=tokens, token_budget=14)
    assert walk.rows == [1, 2] and walk.n_tokens == 14
    walk = walk_rankings([ranking([1, 2, 3, 4])], k=4, tokens=tokens, token_budget=13)
    assert walk.rows == [1]  # row 2 does not fit; rows 3 and 4 would, but do not jump it
    with pytest.raises(ConfigError):
        walk_rankings([ranking([1])], k=1, token_budget=3)


def test_walk_refused_rows_are_never_offered_again():
    offered = []

    def accept(row):
        offered.append(row)
        return row != 2

    walk = walk_rankings([ranking([1, 2, 3]), ranking([2, 4])], k=3, accept=accept)
    assert walk.rows == [1, 4, 3]
    assert offered.count(2) == 1


def test_guard_refuses_rows_above_the_threshold():
    f = [torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])]
    g = weighted_concat(f, [1.0])
    guard = NearDuplicateGuard(0.9, dim=2)
    assert guard.offer(g[0]) and guard.offer(g[2])
    guard = NearDuplicateGuard(0.7, dim=2)
    assert guard.offer(g[0]) and not guard.offer(g[1])  # cos 0.8 > 0.7


def test_guard_grows_and_stops_past_its_work_budget():
    g = torch.Generator().manual_seed(3)
    rows = torch.nn.functional.normalize(torch.randn(200, 4, generator=g), dim=1)
    guard = NearDuplicateGuard(1.0, dim=4)  # refuses nothing: every row is kept
    assert all(guard.offer(r) for r in rows) and guard.n_accepted == 200
    assert guard.work == 4 * sum(range(200))
    small = NearDuplicateGuard(1.0, dim=4, max_work=4 * 10)
    with pytest.raises(GuardBudgetError, match="max_similarity"):
        for r in rows:
            small.offer(r)


def test_weighted_concat_inner_products_are_weighted_cosines():
    g = torch.Generator().manual_seed(1)
    f = [torch.nn.functional.normalize(torch.randn(4, 6, generator=g), dim=1) for _ in range(2)]
    w = [0.25, 0.75]
    x = weighted_concat(f, w)
    want = 0.25 * (f[0] @ f[0].T) + 0.75 * (f[1] @ f[1].T)
    np.testing.assert_allclose(x @ x.T, want, atol=1e-6)


def test_explain_rows_against_loops():
    g = torch.Generator().manual_seed(2)
    c, p, r, t = 2, 5, 3, 4
    rows = [torch.randn(r, p, generator=g) for _ in range(c)]
    targets = [torch.randn(t, p, generator=g) for _ in range(c)]
    w = [0.4, 0.6]
    labels = torch.tensor([0, 0, 1, 1])
    queries = torch.stack(
        [torch.cat([w[k] * targets[k][labels == s].mean(0) for k in range(c)]) for s in (0, 1)]
    )
    which = torch.tensor([1, 0, 1])
    out = explain_rows(rows, queries, scoring_queries(queries, which, "max", False), targets, w)
    for i in range(r):
        for k in range(c):
            want = float(rows[k][i] @ queries[which[i], k * p : (k + 1) * p])
            assert float(out.contributions[i, k]) == pytest.approx(want, abs=1e-5)
        sims = [sum(w[k] * float(rows[k][i] @ targets[k][v]) for k in range(c)) for v in range(t)]
        assert int(out.closest_target[i]) == int(np.argmax(sims))
        assert float(out.closest_similarity[i]) == pytest.approx(max(sims), abs=1e-5)
    assert out.avoid_similarity is None
    mean_q = scoring_queries(queries, which, "mean", False)
    assert torch.allclose(mean_q[0], queries.mean(0))
