"""Summary statistics of per-seed results: mean ± std, and paired comparisons of two methods.

A pair is one (task, seed) cell where both methods were measured: same target task, same seed
(same warmup subset and same training init). ``paired`` counts wins, gives the exact two-sided
sign-test p-value (ties dropped) and a seeded bootstrap CI of the mean paired difference
(resampling the pairs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test: P(a split at least this uneven | each side 1/2), ties dropped.

    p = min(1, 2 · Σ_{i ≤ min(w, l)} C(n, i) / 2^n) with n = w + l; 1.0 when n = 0.
    """
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2.0 * tail / 2.0**n)


def bootstrap_ci(
    diffs: Sequence[float],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CI_LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``diffs`` (pairs resampled with replacement)."""
    x = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(samples, len(x)))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


@dataclass(frozen=True)
class Paired:
    """Method A against method B over paired cells; ``diff`` = A − B (negative: A lower)."""

    a: str
    b: str
    n: int
    a_better: int
    b_better: int
    ties: int
    mean_diff: float
    ci_low: float
    ci_high: float
    sign_p: float

    @property
    def inside_noise(self) -> bool:
        """The bootstrap CI covers 0: no difference can be claimed."""
        return self.ci_low <= 0.0 <= self.ci_high

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "inside_noise": self.inside_noise}


def paired(
    a: str,
    b: str,
    values_a: Sequence[float],
    values_b: Sequence[float],
    lower_is_better: bool = True,
) -> Paired:
    """Compare two methods on the same cells (``values_a[i]`` pairs with ``values_b[i]``).

    Raises:
        ValueError: the sequences differ in length or are empty.
    """
    if len(values_a) != len(values_b) or not values_a:
        raise ValueError(
            f"{a} vs {b}: need equally many paired values, got {len(values_a)} and {len(values_b)}"
        )
    d = np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, dtype=np.float64)
    better = d < 0 if lower_is_better else d > 0
    worse = d > 0 if lower_is_better else d < 0
    low, high = bootstrap_ci(d)
    wins, losses = int(better.sum()), int(worse.sum())
    return Paired(
        a=a,
        b=b,
        n=len(d),
        a_better=wins,
        b_better=losses,
        ties=len(d) - wins - losses,
        mean_diff=float(d.mean()),
        ci_low=low,
        ci_high=high,
        sign_p=sign_test_p(wins, losses),
    )
