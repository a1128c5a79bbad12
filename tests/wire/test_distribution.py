"""The SDK is its own distribution: it installs and imports without torch, and the service and
the wire contract import no more than they should."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _modules_after(statement: str) -> set[str]:
    """Top-level module names loaded by ``statement`` in a fresh interpreter."""
    names = "sorted({m.split('.')[0] for m in sys.modules})"
    code = f"import sys; {statement}; print('\\n'.join({names}))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    )
    return set(out.stdout.split())


def test_wire_contract_imports_no_torch_fastapi_or_httpx():
    loaded = _modules_after("import less_wire")
    assert not loaded & {"torch", "fastapi", "starlette", "httpx", "less_client", "less_core"}
    assert "pydantic" in loaded


def test_the_sdk_imports_no_torch():
    assert "torch" not in _modules_after("import less_client, less_client.cli")


def test_no_service_module_imports_sdk_client_code():
    modules = sorted(
        "service." + ".".join(p.relative_to(REPO / "service").with_suffix("").parts)
        for p in (REPO / "service").rglob("*.py")
        if p.name != "__init__.py"
    )
    loaded = _modules_after("; ".join(f"import {m}" for m in modules))
    assert "service" in loaded and "less_wire" in loaded
    assert "less_client" not in loaded


def test_sdk_wheel_installs_alone_without_torch(tmp_path):
    """Build the SDK's wheel, install it into a fresh venv (deps from pip's configured index),
    import it there, and check that torch cannot be imported in that environment."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO / "client"),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("less_client-*.whl")
    env_dir = tmp_path / "sdk-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True
    )
    if install.returncode != 0 and "No matching distribution" in install.stderr:
        pytest.skip(f"httpx/pydantic not installable here: {install.stderr.strip()[-200:]}")
    assert install.returncode == 0, install.stderr
    check = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util, less_client, less_wire; "
            "from less_client import LessClient, load_targets_jsonl; "
            "print(importlib.util.find_spec('torch') is None, less_client.__version__)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    no_torch, version = check.stdout.split()
    assert no_torch == "True"
    declared = re.search(r'^version = "(.+)"$', (REPO / "client/pyproject.toml").read_text(), re.M)
    assert declared is not None and version == declared.group(1)
    cli = subprocess.run(
        [str(env_dir / "bin" / "less-select"), "--help"], capture_output=True, text=True
    )
    assert cli.returncode == 0 and "--datastore" in cli.stdout
