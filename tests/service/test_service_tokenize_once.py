"""One request path: a select tokenizes each of its targets exactly once, end to end."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from fastapi.testclient import TestClient

from indexer.datastore import Datastore
from indexer.query import QueryEngine
from indexer.requests import examples_from_targets
from less_core.data import tokenize_example
from less_wire import SelectRequest
from service.app import create_app
from tests.service.conftest import TARGETS, auth, make_settings, wait_ready


class CountingTokenizer:
    """Delegates to a real tokenizer and counts encode and chat-template calls."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["encode"] += 1
        return self._inner(*args, **kwargs)

    def apply_chat_template(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["chat_template"] += 1
        return self._inner.apply_chat_template(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_select_tokenizes_each_target_once(datastore_root, tiny_model_dir, tmp_path):
    engines: list[QueryEngine] = []

    def counting_engine(store: Datastore, config: Any, device: str) -> QueryEngine:
        engine = QueryEngine(store, config.model_dir, device)
        engine.tokenizer = CountingTokenizer(engine.tokenizer)
        engines.append(engine)
        return engine

    settings = make_settings(datastore_root, tiny_model_dir, tmp_path, cache_size=0)
    with TestClient(create_app(settings, engine_factory=counting_engine)) as client:
        wait_ready(client)
        for engine in engines:
            engine.tokenizer.calls.clear()  # loading may have touched the tokenizer
        response = client.post(
            "/v1/datastores/tiny/select", headers=auth("alpha"), json={"targets": TARGETS, "k": 3}
        )
        assert response.status_code == 200, response.text
    used = [e for e in engines if e.tokenizer.calls]
    assert len(used) == 1  # only the datastore that was asked

    # What one pass over each target costs, counted on the same tokenizer type directly.
    once = CountingTokenizer(used[0].tokenizer._inner)
    examples = examples_from_targets(SelectRequest.model_validate({"targets": TARGETS}).targets)
    for example in examples:
        tokenize_example(once, example, sys.maxsize)
    assert once.calls["encode"] > 0 and once.calls["chat_template"] > 0
    assert used[0].tokenizer.calls == once.calls
