"""Checkpoint weights, subtask queries, the two serving identities (SPEC §2) and the blocked exact
search, all against float64 numpy brute force over the stored features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from less_core.errors import ConfigError, DataError
from less_core.scoring import (
    aggregate_scores,
    checkpoint_weights,
    l2_normalize,
    subtask_queries,
    top_k,
)
from less_core.search import QuerySet, scan_select


def unit_rows(rng, n, p):
    x = rng.standard_normal((n, p))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Weights, normalisation, queries
# --------------------------------------------------------------------------------------------
def test_checkpoint_weights_values():
    w = checkpoint_weights([2e-5, 1e-5, 1e-5])
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, [0.5, 0.25, 0.25], rtol=1e-15)
    np.testing.assert_allclose(checkpoint_weights([3.0]), [1.0])
    np.testing.assert_allclose(checkpoint_weights([0.0, 1e-4, 3e-4]), [0.0, 0.25, 0.75], rtol=1e-15)
    lrs = [1.7e-5, 1.2e-5, 6e-6, 1e-6]
    np.testing.assert_allclose(checkpoint_weights(lrs), np.array(lrs) / sum(lrs), rtol=1e-15)
    assert checkpoint_weights(lrs).sum() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize(
    "lrs", [[], [0.0, 0.0], [1e-5, -1e-6], [float("nan"), 1.0], [float("inf")], [[1.0]]]
)
def test_checkpoint_weights_errors(lrs):
    with pytest.raises(ConfigError):
        checkpoint_weights(lrs)


def test_l2_normalize():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]])
    out = l2_normalize(x)
    assert torch.allclose(out, torch.tensor([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]]))


def test_subtask_queries_equals_numpy_loop():
    rng = np.random.default_rng(0)
    C, T, P = 3, 9, 5
    labels = ["b", "a", "b", "c", "a", "b", "b", "c", "d"]  # uneven: 4, 2, 2, 1
    feats = [unit_rows(rng, T, P) for _ in range(C)]
    w = checkpoint_weights([3.0, 2.0, 1.0])
    names, q = subtask_queries([torch.tensor(f, dtype=torch.float32) for f in feats], labels, w)
    assert names == ["b", "a", "c", "d"]  # first-seen order
    assert q.shape == (4, C * P) and q.dtype == torch.float32
    expected = np.zeros((4, C * P))
    for s, name in enumerate(names):
        for c in range(C):
            rows = [feats[c][i] for i in range(T) if labels[i] == name]
            expected[s, c * P : (c + 1) * P] = w[c] * (sum(rows) / len(rows))
    np.testing.assert_allclose(q.double().numpy(), expected, rtol=1e-6, atol=1e-7)


def test_subtask_queries_errors():
    f = [torch.zeros(2, 3)]
    with pytest.raises(ConfigError):
        subtask_queries(f, ["a", "a"], [0.5, 0.5])  # one weight per checkpoint
    with pytest.raises(ConfigError):
        subtask_queries(f, ["a", "a", "b"], [1.0])  # 3 labels, 2 rows
    with pytest.raises(DataError):
        subtask_queries([torch.zeros(0, 3)], [], [1.0])


def test_serving_identities():
    """(1) mean_v <f, q(v)> = <f, mean_v q(v)>;
    (2) Σ_c w_c <f_c, q̄_c> = <concat f_c, concat w_c q̄_c>;
    (3) the max over subtasks is exact from the union of each subtask's top-k."""
    rng = np.random.default_rng(1)
    C, N, P, k = 3, 200, 16, 10
    labels = ["x"] * 3 + ["y"] * 5 + ["z"] * 1 + ["w"] * 2
    T = len(labels)
    pool = [unit_rows(rng, N, P) for _ in range(C)]
    targets = [unit_rows(rng, T, P) for _ in range(C)]
    w = checkpoint_weights([1e-5, 3e-5, 2e-5])
    names, q = subtask_queries([torch.tensor(t) for t in targets], labels, w)
    q = q.double().numpy()

    # (1) per checkpoint, per subtask
    for c in range(C):
        for s, name in enumerate(names):
            idx = [i for i, lab in enumerate(labels) if lab == name]
            lhs = np.mean([pool[c] @ targets[c][i] for i in idx], axis=0)
            rhs = pool[c] @ targets[c][idx].mean(axis=0)
            np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-14)
    # (2) weighted sum over checkpoints = one inner product with the concatenation
    direct = np.zeros((N, len(names)))
    for s, name in enumerate(names):
        idx = [i for i, lab in enumerate(labels) if lab == name]
        for c in range(C):
            direct[:, s] += w[c] * np.mean([pool[c] @ targets[c][i] for i in idx], axis=0)
    concat = np.concatenate(pool, axis=1) @ q.T
    np.testing.assert_allclose(concat, direct, rtol=1e-6, atol=1e-7)
    # (3) union of per-subtask top-k contains the top-k of the max
    best = direct.max(axis=1)
    top = set(np.argsort(-best, kind="stable")[:k])
    union = set().union(*(np.argsort(-direct[:, s], kind="stable")[:k] for s in range(len(names))))
    assert top <= union
    union = np.array(sorted(union))
    top_from_union = union[np.argsort(-best[union], kind="stable")[:k]]
    assert list(top_from_union) == list(np.argsort(-best, kind="stable")[:k])


def test_aggregate_and_top_k():
    scores = torch.tensor([[0.1, 0.5], [0.7, -0.2], [0.5, 0.1], [0.0, 0.0]])
    assert torch.allclose(aggregate_scores(scores, "max"), torch.tensor([0.5, 0.7, 0.5, 0.0]))
    assert torch.allclose(aggregate_scores(scores, "mean"), torch.tensor([0.3, 0.25, 0.3, 0.0]))
    with pytest.raises(ConfigError):
        aggregate_scores(scores, "sum")
    agg = torch.tensor([0.5, 0.7, 0.5, 0.0, 0.5])
    assert top_k(agg, 5).tolist() == [1, 0, 2, 4, 3]
    assert top_k(agg, 2).tolist() == [1, 0]
    for k in (0, 6):
        with pytest.raises(ConfigError):
            top_k(agg, k)


# --------------------------------------------------------------------------------------------
# Exact search against brute force
# --------------------------------------------------------------------------------------------
def brute_force(pool64, targets64, labels, names, w, aggregate):
    """Per-row, per-subtask scores straight from the target features; (N,), (N, S)."""
    N = pool64[0].shape[0]
    per_s = np.zeros((N, len(names)))
    for s, name in enumerate(names):
        idx = [i for i, lab in enumerate(labels) if lab == name]
        for c in range(len(pool64)):
            per_s[:, s] += w[c] * np.mean(pool64[c] @ targets64[c][idx].T, axis=1)
    agg = per_s.max(axis=1) if aggregate == "max" else per_s.mean(axis=1)
    return agg, per_s


def check_result(res, agg, per_s, k, tie=1e-6):
    order = np.lexsort((np.arange(len(agg)), -agg))  # score desc, row asc
    rows = res.rows.numpy()
    assert res.rows.dtype == torch.int64 and rows.shape == (k,)
    assert len(set(rows.tolist())) == k
    for i, r in enumerate(rows):
        ref = order[i]
        if r != ref:  # a swap is only allowed between brute-force ties
            assert abs(agg[r] - agg[ref]) <= tie, (i, r, ref, agg[r], agg[ref])
    np.testing.assert_allclose(res.scores.double().numpy(), agg[order[:k]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.scores.double().numpy(), agg[rows], rtol=1e-5, atol=1e-6)
    assert torch.equal(res.best_subtask, torch.from_numpy(per_s[rows].argmax(axis=1)))


def make_case(tmp_path, C, S, dtype, seed=0, N=143, P=12):
    rng = np.random.default_rng(seed)
    sizes = [3, 1, 4, 2][:S]  # uneven target counts per subtask
    labels = [f"s{s}" for s in range(S) for _ in range(sizes[s])]
    rng.shuffle(labels)
    T = len(labels)
    pool = [unit_rows(rng, N, P) for _ in range(C)]
    if dtype == "float16-memmap":
        feats = []
        for c in range(C):
            mm = np.lib.format.open_memmap(
                tmp_path / f"f{c}.npy", mode="w+", dtype=np.float16, shape=(N, P)
            )
            mm[:] = pool[c]
            mm.flush()
            feats.append(np.load(tmp_path / f"f{c}.npy", mmap_mode="r"))
        pool64 = [f.astype(np.float64) for f in feats]  # brute force over the *stored* values
    else:
        feats = [torch.tensor(p, dtype=torch.float32) for p in pool]
        pool64 = [f.double().numpy() for f in feats]
    targets = [torch.tensor(unit_rows(rng, T, P), dtype=torch.float32) for _ in range(C)]
    targets64 = [t.double().numpy() for t in targets]
    w = checkpoint_weights(rng.uniform(1e-6, 2e-5, C))
    names, q = subtask_queries(targets, labels, w)
    return feats, pool64, targets64, labels, names, w, q


@pytest.mark.parametrize("dtype", ["float16-memmap", "float32-tensor"])
@pytest.mark.parametrize("C,S", [(1, 1), (1, 4), (3, 1), (3, 4)])
@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_scan_select_equals_brute_force(tmp_path, dtype, C, S, aggregate):
    feats, pool64, targets64, labels, names, w, q = make_case(
        tmp_path, C, S, dtype, seed=C * 10 + S
    )
    N = pool64[0].shape[0]
    if dtype == "float16-memmap":
        assert isinstance(feats[0], np.memmap) and feats[0].dtype == np.float16
    agg, per_s = brute_force(pool64, targets64, labels, names, w, aggregate)
    # 143 = 20·7 + 3: candidates are merged across 21 blocks; 10_000 rows: a single block.
    for k, block_rows in [(1, 7), (round(0.05 * N), 7), (N, 7), (round(0.05 * N), 10_000)]:
        (res,) = scan_select(feats, [QuerySet(q, k, aggregate)], block_rows=block_rows)
        check_result(res, agg, per_s, k)


def test_several_query_sets_equal_separate_calls(tmp_path):
    feats, pool64, targets64, labels, names, w, q = make_case(
        tmp_path, 3, 4, "float16-memmap", seed=5
    )
    rng = np.random.default_rng(9)
    q2 = torch.tensor(rng.standard_normal((2, q.shape[1])) * 0.1, dtype=torch.float32)
    sets = [
        QuerySet(q, 7, "max"),
        QuerySet(q2, 20, "mean"),
        QuerySet(q[:1], 143, "max"),
        QuerySet(q, 1, "mean"),
    ]
    together = scan_select(feats, sets, block_rows=7)
    assert len(together) == len(sets)
    for qs, res in zip(sets, together):
        (alone,) = scan_select(feats, [qs], block_rows=7)
        assert torch.equal(res.rows, alone.rows)
        assert torch.equal(res.best_subtask, alone.best_subtask)
        torch.testing.assert_close(res.scores, alone.scores, rtol=1e-6, atol=1e-7)
    agg, per_s = brute_force(pool64, targets64, labels, names, w, "max")
    check_result(together[0], agg, per_s, 7)


@pytest.mark.parametrize("dtype", ["float16-memmap", "float32-tensor"])
def test_exact_ties_break_by_lower_row(tmp_path, dtype):
    rng = np.random.default_rng(3)
    N, P = 60, 8
    pool = unit_rows(rng, N, P)
    q = torch.tensor(unit_rows(rng, 2, P), dtype=torch.float32)
    best = int(np.argmax((pool @ q.double().numpy().T).max(axis=1)))
    dupes = sorted({3, 10, 11, 45, best})  # in different blocks of 7 rows
    for r in dupes:
        pool[r] = pool[best]
    pool[[20, 21, 52]] = 0.0  # zero rows tie at score 0
    if dtype == "float16-memmap":
        mm = np.lib.format.open_memmap(
            tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=(N, P)
        )
        mm[:] = pool
        feats = [mm]
    else:
        feats = [torch.tensor(pool, dtype=torch.float32)]
    for agg in ("max", "mean"):
        (res,) = scan_select(feats, [QuerySet(q, N, agg)], block_rows=7)
        rows = res.rows.tolist()
        if agg == "max":
            assert rows[: len(dupes)] == dupes
            (two,) = scan_select(feats, [QuerySet(q, 2, agg)], block_rows=7)
            assert two.rows.tolist() == dupes[:2]
        pos = [rows.index(r) for r in (20, 21, 52)]
        assert pos == sorted(pos) and pos[2] - pos[0] == 2  # adjacent, in row order
        s = res.scores
        assert torch.all(s[:-1] >= s[1:])
        # among equal scores rows ascend
        for i in range(N - 1):
            if s[i] == s[i + 1]:
                assert rows[i] < rows[i + 1]


def test_scan_select_errors():
    feats = [torch.zeros(10, 4), torch.zeros(10, 4)]
    q = torch.zeros(2, 8)
    for k in (0, 11, -1):
        with pytest.raises(ConfigError):
            scan_select(feats, [QuerySet(q, k)])
    with pytest.raises(ConfigError):
        scan_select(feats, [QuerySet(torch.zeros(2, 4), 3)])  # one checkpoint's width only
    with pytest.raises(ConfigError):
        scan_select(feats, [QuerySet(torch.zeros(8), 3)])  # not 2-D
    with pytest.raises(ConfigError):
        scan_select([torch.zeros(10, 4), torch.zeros(9, 4)], [QuerySet(q, 3)])
    with pytest.raises(ConfigError):
        scan_select([], [QuerySet(q, 3)])
    (res,) = scan_select(feats, [QuerySet(q, 10)])  # k = N is fine
    assert res.rows.tolist() == list(range(10))


def test_scan_select_bits_do_not_depend_on_batching():
    """A query set searched alone or among 40 others gets bit-identical scores (CPU BLAS)."""
    gen = torch.Generator().manual_seed(3)
    feats = [
        torch.nn.functional.normalize(torch.randn(500, 64, generator=gen), dim=1) for _ in range(2)
    ]
    sets = [QuerySet(torch.randn(1 + i % 3, 128, generator=gen), k=20) for i in range(41)]
    together = scan_select(feats, sets, block_rows=128)
    for qs, res in zip(sets, together):
        alone = scan_select(feats, [qs], block_rows=128)[0]
        assert torch.equal(alone.scores, res.scores) and torch.equal(alone.rows, res.rows)
