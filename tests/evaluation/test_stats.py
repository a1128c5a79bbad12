"""bench.evaluation.stats against hand-computed values."""

import math

import pytest

from bench.evaluation.stats import bootstrap_ci, mean_std, paired, sign_test_p


def test_mean_std_is_sample_std():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert std == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([7.0]) == (7.0, 0.0)


@pytest.mark.parametrize(
    ("wins", "losses", "p"),
    [
        (8, 2, 2 * (1 + 10 + 45) / 1024),  # 2 * P(X <= 2), X ~ Bin(10, 1/2)
        (10, 0, 2 / 1024),
        (0, 10, 2 / 1024),
        (5, 1, 2 * (1 + 6) / 64),
        (3, 3, 1.0),  # 2 * 42/64 > 1: capped
        (0, 0, 1.0),
    ],
)
def test_sign_test_exact_binomial(wins, losses, p):
    assert sign_test_p(wins, losses) == pytest.approx(p)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    diffs = [-0.3, 0.1, -0.2, -0.05, -0.4, 0.02, -0.1, -0.25]
    low, high = bootstrap_ci(diffs, samples=2000, seed=3)
    assert (low, high) == bootstrap_ci(diffs, samples=2000, seed=3)
    assert (low, high) != bootstrap_ci(diffs, samples=2000, seed=4)
    assert low < sum(diffs) / len(diffs) < high
    assert bootstrap_ci([0.5] * 5) == (0.5, 0.5)


def test_paired_counts_and_direction():
    c = paired("a", "b", [1.0, 2.0, 3.0, 5.0], [2.0, 2.0, 4.0, 4.5])
    assert (c.n, c.a_better, c.b_better, c.ties) == (4, 2, 1, 1)
    assert c.mean_diff == pytest.approx((-1 + 0 - 1 + 0.5) / 4)
    assert c.sign_p == 1.0  # 2 vs 1: 2 * (1 + 3) / 8 capped at 1
    higher = paired("a", "b", [0.9, 0.8], [0.5, 0.5], lower_is_better=False)
    assert (higher.a_better, higher.b_better) == (2, 0)
    assert not higher.to_json()["inside_noise"]


def test_paired_refuses_unpaired_values():
    with pytest.raises(ValueError, match="equally many"):
        paired("a", "b", [1.0], [1.0, 2.0])
