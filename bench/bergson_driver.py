"""Run one `bergson` CLI command in-process and record how long its featurization step took.

Executed by ``bench/bergson_compare.py`` with the *bergson* virtual environment's Python (bergson
is not installed in the project's venv). It behaves exactly like ``bergson <args>``; the only
addition is two timing wrappers that change nothing in the computation:

- around ``bergson.build.collect_gradients`` (the forward/backward/projection loop over all
  batches plus writing the index; model loading, tokenization and batch allocation come before);
- around ``GradientCollector.process_batch`` (called once after each batch), to timestamp batches.

It stays a plain script run by path, unlike the benchmarks (``python -m bench.<name>``): the
bergson interpreter has neither this project nor its dependencies, this file imports nothing from
the repository, and ``-m bench.bergson_driver`` would need the repository root on that
interpreter's ``sys.path``, where this project's top-level packages (``service``, ``demo``, ...)
could shadow modules bergson imports. ``bench.bergson_compare`` resolves the path from its own
location, so the working directory does not matter.

Usage: <bergson venv>/bin/python bench/bergson_driver.py TIMINGS_JSON build RUN_PATH [flags...]
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version


def main() -> int:
    timings_path, args = sys.argv[1], sys.argv[2:]
    if len(args) < 2 or args[0] != "build":
        raise SystemExit("usage: bergson_driver.py TIMINGS_JSON build RUN_PATH [flags...]")
    run_path = args[1]
    t_start = time.perf_counter()

    import bergson.build as bergson_build
    import torch
    from bergson.__main__ import main as bergson_main
    from bergson.collector import gradient_collectors

    marks: dict = {"batches": []}
    collect = bergson_build.collect_gradients

    def timed_collect(*a, **k):
        marks["collect_start"] = time.perf_counter()
        result = collect(*a, **k)
        marks["collect_end"] = time.perf_counter()
        return result

    bergson_build.collect_gradients = timed_collect
    process_batch = gradient_collectors.GradientCollector.process_batch

    def timed_process_batch(self, indices, **kwargs):
        result = process_batch(self, indices, **kwargs)
        marks["batches"].append([time.perf_counter(), list(indices)])
        return result

    gradient_collectors.GradientCollector.process_batch = timed_process_batch

    sys.argv = ["bergson", *args]
    bergson_main()
    t_end = time.perf_counter()

    from datasets import load_from_disk

    data = load_from_disk(f"{run_path}/data.hf")
    start = marks["collect_start"]
    batches = marks["batches"]
    lengths = [int(x) for x in data["length"]] if "length" in data.column_names else None
    report = {
        "bergson_version": version("bergson"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "process_s": t_end - t_start,
        "collect_s": marks["collect_end"] - start,
        # featurization: from the start of collection to the end of the last batch
        "featurize_s": batches[-1][0] - start,
        "batch_s": [t - (batches[i - 1][0] if i else start) for i, (t, _) in enumerate(batches)],
        "batch_sizes": [len(ix) for _, ix in batches],
        "batch_tokens": [sum(lengths[i] for i in ix) for _, ix in batches] if lengths else None,
        "losses": [float(x) for x in data["loss"]] if "loss" in data.column_names else None,
        "lengths": lengths,
    }
    with open(timings_path, "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
