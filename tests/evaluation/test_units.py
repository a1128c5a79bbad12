"""Resume logic of bench.evaluation.units: a finished unit is not redone; a partial one is."""

import json

from bench.evaluation.units import Progress, UnitCache, unit_key


def _counting():
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    return calls, compute


def test_a_finished_unit_is_read_back(tmp_path):
    progress = Progress({"training": 2})
    cache = UnitCache(tmp_path, progress)
    calls, compute = _counting()
    assert cache.run("training", "t", {"a": 1}, compute) == {"value": 1}
    assert cache.run("training", "t", {"a": 1}, compute) == {"value": 1}
    assert len(calls) == 1
    # asked for twice in one run: computed once, counted once
    assert progress.finished["training"] == 1 and len(progress.timed["training"]) == 1
    # Other inputs are another unit.
    assert cache.run("training", "t", {"a": 2}, compute) == {"value": 2}
    stored = json.loads(cache.path("training", "t", {"a": 1}).read_text())
    assert stored["inputs"] == {"a": 1} and stored["seconds"] >= 0


def test_a_killed_partial_unit_is_redone(tmp_path):
    cache = UnitCache(tmp_path)
    calls, compute = _counting()
    path = cache.path("selection", "s", {"k": 3})
    path.parent.mkdir(parents=True)
    # What a kill can leave: the temp file of an atomic write (ignored), or a torn file.
    path.with_name(f".{path.name}.tmp").write_text('{"result": {"value": 99}')
    assert cache.run("selection", "s", {"k": 3}, compute) == {"value": 1}
    path.write_text('{"kind": "selection", "res')
    assert cache.run("selection", "s", {"k": 3}, compute) == {"value": 2}
    path.write_text(json.dumps({"kind": "selection"}))  # no result: not a finished unit
    assert cache.run("selection", "s", {"k": 3}, compute) == {"value": 3}
    assert cache.run("selection", "s", {"k": 3}, compute) == {"value": 3}
    assert len(calls) == 3


def test_keys_ignore_dict_order_and_seconds_add_up(tmp_path):
    assert unit_key({"a": 1, "b": [1, 2]}) == unit_key({"b": [1, 2], "a": 1})
    cache = UnitCache(tmp_path)
    for i in range(3):
        cache.run("warmup", f"w{i}", i, lambda: {})
    totals = cache.seconds_by_kind()
    assert totals["warmup"]["units"] == 3


def test_eta_uses_measured_times():
    progress = Progress({"training": 4, "warmup": 1})
    progress.done("training", 2.0, "a")
    progress.done("training", 4.0, "b")
    progress.skipped("warmup")
    assert progress.eta_s() == 2 * 3.0
    assert progress.counts() == "training 2/4, warmup 1/1"
