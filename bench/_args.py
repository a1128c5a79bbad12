"""Command-line pieces the benchmarks share: the parser, model/LoRA/threads flags, the run's start.

The LoRA flags are the benchmarks' own (``--lora-rank``/``--lora-modules``, alpha = 4 x rank, no
dropout) rather than ``indexer.cli_args.add_dataclass_args(LoraSettings)``: that helper names the
flag ``--lora-target-modules`` and defaults to the paper's rank 128, so the commands recorded in
``bench/results/*.json`` would no longer rerun as written.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence

import torch

from less_core.config import LoraSettings

LOG_FORMAT = "%(asctime)s %(message)s"


def bench_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser for ``python -m bench.<module>``, described by the first line of ``doc``."""
    return argparse.ArgumentParser(
        prog=f"python -m bench.{module}", description=(doc or "").strip().splitlines()[0]
    )


def add_model_args(ap: argparse.ArgumentParser, *, lora_layers: bool = False) -> None:
    """``--model-dir`` and the LoRA placement flags; ``--lora-layers`` only where asked for."""
    ap.add_argument("--model-dir", required=True, help="base model directory")
    ap.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r (alpha = 4r, no dropout)")
    ap.add_argument("--lora-modules", default="q_proj,v_proj", help="comma-separated LoRA modules")
    if lora_layers:
        ap.add_argument(
            "--lora-layers", default=None, help="comma-separated decoder layers (default all)"
        )


def lora_settings(ns: argparse.Namespace) -> LoraSettings:
    """The LoRA placement the flags of :func:`add_model_args` describe."""
    layers = getattr(ns, "lora_layers", None)
    return LoraSettings(
        rank=ns.lora_rank,
        alpha=4 * ns.lora_rank,
        dropout=0.0,
        target_modules=tuple(ns.lora_modules.split(",")),
        layers=tuple(int(x) for x in layers.split(",")) if layers else None,
    )


def add_threads_arg(ap: argparse.ArgumentParser, help: str = "torch threads") -> None:
    """``--threads`` (default: torch's own choice)."""
    ap.add_argument("--threads", type=int, default=None, help=help)


def start(ns: argparse.Namespace) -> None:
    """Log to stderr with timestamps and apply ``--threads`` before any model is loaded."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if getattr(ns, "threads", None):
        torch.set_num_threads(ns.threads)


def command_line(ap: argparse.ArgumentParser, argv: Sequence[str] | None) -> str:
    """The command as run (``argv`` or, when None, this process's arguments), for the report."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join([ap.prog, shlex.join(args)]) if args else ap.prog
