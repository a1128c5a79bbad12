"""Prometheus metrics in the text exposition format, written by hand (no client library here).

Counters and histograms are keyed by label values; gauges read their value when scraped.
The HTTP metrics' labels are bounded whatever clients send: a method outside ``HTTP_METHODS``
is counted as ``other``, a route label is the matched route's template (a fixed set) or
``unmatched``, a status outside 100-599 is ``other``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
_MAX_ROUTE_LABEL = 200


def http_method_label(method: str) -> str:
    """``method`` if it is a standard one, else ``other``."""
    return method if method in HTTP_METHODS else "other"


def route_label(route: str) -> str:
    """A route template (``/v1/jobs/{job_id}``) as given, anything else ``unmatched``."""
    ok = route.startswith("/") and len(route) <= _MAX_ROUTE_LABEL and route.isprintable()
    return route if ok else UNMATCHED


def status_label(status: str) -> str:
    return status if len(status) == 3 and status.isdigit() and "1" <= status[0] <= "5" else "other"


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class Counter:
    """A monotonically increasing count per label combination."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()):
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in items]


class Histogram:
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ):
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.buckets = tuple(buckets)
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., sum, count
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            series = self._series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
            for i in range(bisect.bisect_left(self.buckets, value), len(self.buckets)):
                series[i] += 1
            series[-2] += value
            series[-1] += 1

    def count(self, *labels: str) -> float:
        series = self._series.get(labels)
        return series[-1] if series else 0.0

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        lines = []
        for key, series in items:
            for bound, n in zip(self.buckets, series):
                le = _labels(self.label_names, key, f'le="{_num(bound)}"')
                lines.append(f"{self.name}_bucket{le} {_num(n)}")
            inf = _labels(self.label_names, key, 'le="+Inf"')
            lines.append(f"{self.name}_bucket{inf} {_num(series[-1])}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_num(series[-2])}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {_num(series[-1])}")
        return lines


class HttpRequests(Counter):
    """``less_http_requests_total{method, route, status}`` with bounded label values."""

    def __init__(self) -> None:
        super().__init__(
            "less_http_requests_total",
            "HTTP requests by route and status.",
            ("method", "route", "status"),
        )

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        method, route, status = labels
        super().inc(
            http_method_label(method), route_label(route), status_label(status), amount=amount
        )


class HttpLatency(Histogram):
    """``less_http_request_duration_seconds{route}`` with a bounded route label."""

    def __init__(self) -> None:
        super().__init__(
            "less_http_request_duration_seconds",
            "HTTP request latency.",
            LATENCY_BUCKETS,
            ("route",),
        )

    def observe(self, value: float, *labels: str) -> None:
        super().observe(value, *(route_label(label) for label in labels))


class Gauge:
    """A value read from a callable at scrape time (None: not exported)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float | None]):
        self.name, self.help, self._read = name, help_text, read

    def samples(self) -> list[str]:
        value = self._read()
        return [] if value is None else [f"{self.name} {_num(value)}"]


class Metrics:
    """The service's metrics; ``render`` gives the /metrics body."""

    def __init__(
        self, queue_depth: Callable[[], float | None], gpu_memory: Callable[[], float | None]
    ):
        self.requests = HttpRequests()
        self.latency = HttpLatency()
        self.batch_size = Histogram(
            "less_batch_size", "Select requests answered per engine call.", BATCH_BUCKETS
        )
        self.cache_hits = Counter(
            "less_select_cache_hits_total", "Selections answered from the cache."
        )
        self.rejected = Counter(
            "less_select_rejected_total", "Selections refused by the worker.", ("reason",)
        )
        self._all: list[Counter | Histogram | Gauge] = [
            self.requests,
            self.latency,
            self.batch_size,
            self.cache_hits,
            self.rejected,
            Gauge("less_queue_depth", "Select requests waiting for the worker.", queue_depth),
            Gauge("less_gpu_memory_allocated_bytes", "CUDA memory allocated by torch.", gpu_memory),
        ]

    def render(self) -> str:
        lines = []
        for metric in self._all:
            lines.append(f"# HELP {metric.name} {metric.help}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"
