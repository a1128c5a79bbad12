"""Run the service as a separate process on a free loopback port (demo, benchmarks, tests)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from less_core.errors import LessError

log = logging.getLogger(__name__)

READY_POLL_S = 0.2
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def service_process(
    settings: dict[str, Any],
    workdir: Path,
    *,
    ready_timeout_s: float,
    env: dict[str, str] | None = None,
    log_level: str = "warning",
) -> Iterator[str]:
    """Start ``python -m service`` with ``settings``, wait until ``/readyz`` is 200, yield its URL.

    The settings go to ``workdir/service.json`` and the output to ``workdir/service.log``. The
    process is always terminated (then killed if it lingers) when the block exits.

    Raises:
        LessError: the process exits early or is not ready in time (the log path is named).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "service.json"
    config_path.write_text(json.dumps(settings, indent=2))
    log_path = workdir / "service.log"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "service",
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        log_level,
    ]
    log.info("starting the service on %s (log: %s)", base_url, log_path)
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=Path(__file__).resolve().parents[1],
        )
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    raise LessError(
                        f"the service exited with status {proc.returncode}; see {log_path}"
                    )
                try:
                    if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise LessError(
                        f"the service was not ready within {ready_timeout_s:.0f} s; see {log_path}"
                    )
                time.sleep(READY_POLL_S)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.info("service stopped")
