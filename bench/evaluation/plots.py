"""The evaluation's figure: each selection method's difference to random per task, with error
bars over seeds, for held-out loss and accuracy in both settings (raw bars would hide the
differences). Colours and offsets are fixed per method across panels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.evaluation.plan import RANDOM, WHOLE_POOL
from bench.evaluation.stats import mean_std

MARKERS = "osD^v<>pXh*"


def paired_diffs(values: dict[str, list[float | None]], method: str) -> list[float]:
    """Per-seed differences method − random where both were measured."""
    return [
        x - y
        for x, y in zip(values.get(method, []), values.get(RANDOM, []))
        if x is not None and y is not None
    ]


def plot(results: dict[str, Any], path: Path) -> Path:
    """Write the figure (rows: loss, accuracy; columns: settings) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("heldout_loss", "held-out loss − random (lower is better)")]
    if any(results["accuracy"][s] for s in results["settings"]):
        metrics.append(("accuracy", "option accuracy − random (higher is better)"))
    settings = results["settings"]
    # whole_pool trains on 20x the rows: it has its rows in the tables, not on this scale.
    methods = [m for m in results["methods"] if m not in (RANDOM, WHOLE_POOL)]
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    size = (7.5 * len(settings), 4.2 * len(metrics))
    fig, axes = plt.subplots(len(metrics), len(settings), figsize=size, squeeze=False)
    width = 0.8 / max(1, len(methods))
    for row, (key, title) in enumerate(metrics):
        for col, setting in enumerate(settings):
            ax = axes[row][col]
            tasks = [t for t in results["tasks"] if t in results[key][setting]]
            x = np.arange(len(tasks))
            for i, method in enumerate(methods):
                means, errs, xs = [], [], []
                for j, task in enumerate(tasks):
                    diffs = paired_diffs(results[key][setting][task], method)
                    if diffs:
                        mean, std = mean_std(diffs)
                        means.append(mean)
                        errs.append(std)
                        xs.append(x[j] - 0.4 + (i + 0.5) * width)
                if xs:
                    ax.errorbar(
                        xs,
                        means,
                        yerr=errs,
                        fmt=MARKERS[i % len(MARKERS)],
                        color=colors[method],
                        capsize=2,
                        label=method,
                    )
            ax.axhline(0.0, color="black", linewidth=0.8)
            for j in range(1, len(tasks)):
                ax.axvline(j - 0.5, color="0.9", linewidth=0.6)
            ax.set_xticks(x, tasks, rotation=20, fontsize=7, ha="right")
            ax.set_title(f"{setting}: {title}", fontsize=9)
            ax.tick_params(axis="y", labelsize=7)
    axes[0][0].legend(fontsize=7, ncol=2)
    n_seeds = len(results["seeds"])
    fig.suptitle(
        f"{results['label']} — mean ± std over {n_seeds} seeds of the paired difference to "
        "random selection (same k, same training; whole_pool: see the tables)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
