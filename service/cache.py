"""LRU cache of answered selections, keyed by datastore, version and the canonical request."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from less_wire import SelectRequest, SelectResponse


def cache_key(datastore: str, version: str, request: SelectRequest) -> str:
    """Canonical JSON of everything that determines the answer (sorted keys, no whitespace)."""
    body = request.model_dump(mode="json")
    return json.dumps([datastore, version, body], sort_keys=True, separators=(",", ":"))


class SelectionCache:
    """A thread-safe LRU of ``SelectResponse``s; ``size=0`` disables it."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, SelectResponse] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> SelectResponse | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: str, value: SelectResponse) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
