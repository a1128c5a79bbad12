"""``python -m tests.service.fault_server --config ...``: the real service (uvicorn, as
``python -m service``) with faults injected from the ``LESS_TEST_FAULTS`` JSON, for crash tests:

    hang_search_k: a search holding a query with this k sleeps for an hour (kill it there).
    hang_gradients_n: target gradients of a request with this many targets sleep for an hour.
    calls_file: each target-gradient computation appends its requests' target counts here.
"""

from __future__ import annotations

import json
import os
import sys
import time

from indexer.query import QueryEngine
from indexer.search import ShardSearcher
from service.__main__ import main

HANG_S = 3600.0


def install(faults: dict) -> None:
    features, search = QueryEngine.target_features, ShardSearcher.search
    calls_file = faults.get("calls_file")
    hang_n, hang_k = faults.get("hang_gradients_n"), faults.get("hang_search_k")

    def target_features(self, groups, *args, **kwargs):
        sizes = [len(g) for g in groups]
        if calls_file:
            with open(calls_file, "a") as handle:
                handle.write(json.dumps(sizes) + "\n")
        if hang_n is not None and hang_n in sizes:
            time.sleep(HANG_S)
        return features(self, groups, *args, **kwargs)

    def slow_search(self, checkpoints, query_sets, params):
        if hang_k is not None and any(qs.k == hang_k for qs in query_sets):
            time.sleep(HANG_S)
        return search(self, checkpoints, query_sets, params)

    QueryEngine.target_features = target_features  # type: ignore[method-assign]
    ShardSearcher.search = slow_search  # type: ignore[method-assign]


if __name__ == "__main__":
    install(json.loads(os.environ.get("LESS_TEST_FAULTS", "{}")))
    sys.exit(main())
