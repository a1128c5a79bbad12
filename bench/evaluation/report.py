"""Markdown tables of a results file (for BENCHMARKS.md): mean ± std per task and method, the
paired comparisons with their verdicts, retrieval shares and projection fidelity.

``python -m bench.evaluation.report bench/results/evaluate.json`` prints them again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from bench.evaluation.plan import SETTINGS
from bench.evaluation.stats import mean_std

log = logging.getLogger(__name__)

SIGNIFICANCE = 0.05


def _cell(vals: list[float | None], digits: int) -> str:
    got = [v for v in vals if v is not None]
    if not got:
        return "–"
    mean, std = mean_std(got)
    tail = "" if len(got) > 1 else " (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}{tail}"


def value_table(results: dict[str, Any], key: str, setting: str, digits: int) -> list[str]:
    """One row per task: the base model, then each method's mean ± std over seeds."""
    methods = results["methods"]
    field = "loss" if key == "heldout_loss" else "accuracy"
    lines = [
        "| task | base model | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 2) + "|",
    ]
    for task in [t for t in results["tasks"] if t in results[key][setting]]:
        by_method = results[key][setting][task]
        base = results["base_model"][task].get(field)
        cells = [_cell(by_method[m], digits) if m in by_method else "–" for m in methods]
        base_s = f"{base:.{digits}f}" if base is not None else "–"
        lines.append(f"| {task} | {base_s} | " + " | ".join(cells) + " |")
    return lines


def verdict(c: dict[str, Any], lower_is_better: bool) -> str:
    if c["inside_noise"] or c["sign_p"] > SIGNIFICANCE:
        return "inside the noise"
    a_wins = (c["mean_diff"] < 0) == lower_is_better
    return f"{c['a'] if a_wins else c['b']} better"


def paired_table(results: dict[str, Any], key: str, setting: str, digits: int) -> list[str]:
    """A vs B over the (task, seed) cells: wins, mean difference with its 95 % bootstrap CI,
    the sign test's p-value and a plain verdict."""
    lower = key == "heldout_loss"
    lines = [
        "| A vs B | pairs | A better | B better | ties | mean A − B [95 % CI] | sign p | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in results["paired"][key][setting]:
        lines.append(
            f"| {c['a']} vs {c['b']} | {c['n']} | {c['a_better']} | {c['b_better']} | "
            f"{c['ties']} | {c['mean_diff']:+.{digits}f} [{c['ci_low']:+.{digits}f}, "
            f"{c['ci_high']:+.{digits}f}] | {c['sign_p']:.3g} | {verdict(c, lower)} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """Every table of the results, with headings."""
    out = [f"**{results['label']}** — command: `{results['command']}`", ""]
    out.append(
        f"Seeds {results['seeds']}; k = {results['k']} of {results['n_pool']} pool rows; "
        f"optimizer steps per training {results['steps']}; wall time of this invocation "
        f"{results['wall_s'] / 60:.1f} min, compute of all units (across resumes) "
        f"{results['compute_s'] / 60:.1f} min."
    )
    if not results["dsir"]["ran"]:
        out.append(f"DSIR was not run: {results['dsir']['why_not']}")
    for key, title, digits in (
        ("heldout_loss", "Held-out loss (mean ± std over seeds; lower is better)", 4),
        ("accuracy", "Option accuracy by log-likelihood (mean ± std; higher is better)", 3),
    ):
        for setting in SETTINGS:
            if not results[key][setting]:
                continue
            out += ["", f"{title} — {setting}:", ""]
            out += value_table(results, key, setting, digits)
            out += ["", f"Paired comparisons — {key}, {setting}:", ""]
            out += paired_table(results, key, setting, digits)
    out += ["", "Share of the selection taken from the target task's own rows (in_pool):", ""]
    methods = [m for m in results["methods"] if m in next(iter(results["own_task_share"].values()))]
    out += ["| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for task in results["tasks"]:
        by_method = results["own_task_share"][task]
        out.append(
            f"| {task} | " + " | ".join(_cell(by_method.get(m, []), 2) for m in methods) + " |"
        )
    if results.get("fidelity"):
        fid = results["fidelity"]
        out += ["", f"Projection fidelity ({fid['pairs']} pairs, {fid['checkpoint']}):", ""]
        out += ["| kind | P | Spearman | max abs err |", "|---|---|---|---|"]
        for r in fid["results"]:
            out.append(
                f"| {r['kind']} | {r['dim']} | {r['spearman']:.3f} | {r['max_abs_err']:.3f} |"
            )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.evaluation.report", description=__doc__)
    ap.add_argument("results", help="a results file of python -m bench.evaluation")
    ns = ap.parse_args(argv)
    sys.stdout.write(markdown(json.loads(Path(ns.results).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
