"""The whole evaluation on the tiny model and generated BIG-bench-format tasks: the results file
has the issue's schema, and a rerun redoes only what is missing."""

import dataclasses
import json
import shutil

import pytest

from bench.evaluation import run as run_module
from bench.evaluation.plan import IN_POOL, OUT_OF_POOL, Scale
from bench.evaluation.plots import plot
from bench.evaluation.report import markdown
from bench.evaluation.run import RunOptions, run
from tests.evaluation.synthetic_bigbench import write_synthetic_tasks

TINY = Scale(
    name="test",
    target_tasks=("weekday_after", "add_numbers"),
    n_pool_tasks=3,
    per_task_pool=8,
    n_targets_per_task=3,
    n_eval_per_task=4,
    seeds=(0, 1),
    max_length=256,
    lora_rank=4,
    lora_top_layers=1,
    warmup_fraction=0.25,
    warmup_lr=5e-3,
    proj_dim=64,
    train_epochs=2,
    train_batch=2,
    train_lr=5e-3,
    fidelity_dims=(16, 32),
)


def _units(cache_dir):
    return {p: p.stat().st_mtime_ns for p in (cache_dir / "units").glob("*/*.json")}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("evaluate")
    options = RunOptions(
        scale=TINY,
        data_dir=root / "data",
        cache_dir=root / "cache",
        tasks_dir=write_synthetic_tasks(root / "tasks", n_examples=24),
        model_dir=tiny_model_dir,
    )
    return options, run(options)


def test_results_have_the_issue_schema(evaluated, tmp_path):
    _, results = evaluated
    assert results["seeds"] == [0, 1]
    assert results["tasks"] == ["weekday_after", "add_numbers"]
    assert results["settings"] == [IN_POOL, OUT_OF_POOL]
    methods = results["methods"]
    assert {
        "less",
        "less_last_ckpt",
        "bm25",
        "rds_mean",
        "rds_last",
        "random",
        "whole_pool",
    } <= set(methods)
    assert "dsir" in methods and results["dsir"]["ran"]
    for setting in results["settings"]:
        for task in results["tasks"]:
            by_method = results["heldout_loss"][setting][task]
            for method in methods:
                if method == "less_dense":
                    continue
                values = by_method[method]
                assert len(values) == 2 and all(isinstance(v, float) for v in values)
    # less_dense: seed 0 in the in-pool setting only; null at the other seed
    assert results["heldout_loss"][IN_POOL]["add_numbers"]["less_dense"][1] is None
    assert "less_dense" not in results["heldout_loss"][OUT_OF_POOL]["add_numbers"]
    # weekday_after lists options: accuracy per seed; add_numbers is free-form: none
    acc = results["accuracy"][IN_POOL]["weekday_after"]["less"]
    assert len(acc) == 2 and all(0.0 <= a <= 1.0 for a in acc)
    assert "add_numbers" not in results["accuracy"][IN_POOL]
    assert results["steps"][IN_POOL]["selection"] >= 1
    assert results["paired"]["heldout_loss"][IN_POOL]
    json.dumps(results)  # plain JSON all the way down
    results["command"] = "./run evaluate --scale test"
    assert "inside the noise" in markdown(results) or "better" in markdown(results)
    assert plot(results, tmp_path / "fig.png").stat().st_size > 0


def test_a_rerun_redoes_only_missing_units(evaluated):
    options, first = evaluated
    before = _units(options.cache_dir)
    again = run(options)
    assert _units(options.cache_dir) == before
    assert again["heldout_loss"] == first["heldout_loss"]
    # Lose one training and tear another (a kill mid-write leaves at most a torn temp file,
    # but a torn unit file must be redone too).
    trainings = sorted(p for p in before if p.parent.name == "training")
    lost, torn = trainings[0], trainings[1]
    lost.unlink()
    torn.write_text('{"kind": "training", "resu')
    third = run(options)
    after = _units(options.cache_dir)
    changed = {p for p in after if after[p] != before.get(p)}
    assert changed == {lost, torn}
    assert third["heldout_loss"] == first["heldout_loss"]  # same inputs, same numbers


def test_a_change_to_how_questions_are_built_redoes_the_measurements(
    evaluated, tmp_path, monkeypatch
):
    """Units that evaluate are keyed by what they measure, not only by the split files: when
    option detection changes, cached accuracies must not come back, and nothing upstream of
    the measurements (warmups, datastores, selections) is redone."""
    options, first = evaluated
    assert "weekday_after" in first["accuracy"][IN_POOL]
    copy = dataclasses.replace(options, cache_dir=tmp_path / "cache")
    shutil.copytree(options.cache_dir, copy.cache_dir)
    before = _units(copy.cache_dir)
    monkeypatch.setattr(run_module, "option_rows", lambda evals, closed: ([], []))
    changed = run(copy)
    assert "weekday_after" not in changed["accuracy"][IN_POOL]
    new_kinds = {p.parent.name for p in _units(copy.cache_dir) if p not in before}
    assert {"base", "training", "whole_pool"} <= new_kinds
    assert not new_kinds & {"warmup", "datastore", "selection"}
