"""Writing a benchmark's JSON report and printing its summary, the same way for every script."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(
    report: dict[str, Any], out: str | Path, summary: dict[str, Any] | None = None
) -> Path:
    """Write ``report`` as indented JSON to ``out``; print ``summary`` when given."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    if summary is not None:
        print(json.dumps(summary, indent=2))
    return path
