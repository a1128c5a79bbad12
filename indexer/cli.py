"""``less-index``: warmup, build, verify, info and select on the command line.

Each subcommand parses its flags into config dataclasses and calls one library function. Exit
statuses follow ``less_wire.exit_codes`` like every CLI of the project: 0 ok, 2 a usage or input
error (one line on stderr, no traceback), 1 unexpected (``verify`` also exits 1 when the
datastore fails its checks), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from indexer.cli_args import add_dataclass_args, dataclass_from_args
from indexer.config import BuildConfig, WarmupConfig
from less_core.config import (
    AdamFeatureConfig,
    LoraSettings,
    ProjectionConfig,
    TokenizationConfig,
)
from less_core.errors import LessError
from less_wire import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    InputFileError,
    SelectRequest,
    add_steering_arguments,
    describe_validation_errors,
    load_targets_jsonl,
    steering_options,
)

log = logging.getLogger("less-index")


def _cmd_warmup(ns: argparse.Namespace) -> int:
    from indexer.warmup import run_warmup

    out = run_warmup(
        Path(ns.model_dir),
        Path(ns.pool),
        Path(ns.out),
        dataclass_from_args(LoraSettings, ns, "lora"),
        dataclass_from_args(WarmupConfig, ns),
        dataclass_from_args(TokenizationConfig, ns),
        device=ns.device,
    )
    print(out)
    return EXIT_OK


def _parse_lrs(items: list[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise LessError(f"--checkpoint-lr expects NAME=LR, got {item!r}")
    return out


def _cmd_build(ns: argparse.Namespace) -> int:
    from indexer import distributed
    from indexer.build import BuildRequest, build_datastore

    ranks = distributed.Ranks()
    try:
        # Under torchrun: one rank of the job (own device, [rank r/n] log prefix); else Ranks().
        ranks = distributed.init_from_env(ns.device, ns.dist_timeout_s)
        req = BuildRequest(
            model_dir=Path(ns.model_dir),
            pool_path=Path(ns.pool),
            warmup_dir=Path(ns.warmup_dir),
            out_root=Path(ns.out),
            model_id=ns.model_id or "",
            projection=dataclass_from_args(ProjectionConfig, ns, "proj"),
            build=dataclass_from_args(BuildConfig, ns),
            adam=dataclass_from_args(AdamFeatureConfig, ns, "adam"),
            tokenization=dataclass_from_args(TokenizationConfig, ns),
            checkpoints=tuple(ns.checkpoints.split(",")) if ns.checkpoints else None,
            lr_overrides=_parse_lrs(ns.checkpoint_lr),
            device=ranks.device or ns.device,
        )
        published = build_datastore(req, ranks)
    except distributed.CollectiveError as exc:
        print(f"less-index build: error: {exc}", file=sys.stderr)
        return EXIT_UNEXPECTED
    except Exception as exc:
        if ranks.distributed:  # this rank's exit status makes torchrun stop the others
            log.error("%s failed: %s: %s", ranks.label, type(exc).__name__, exc)
        raise
    ranks.close()
    if ranks.is_main:  # one line on stdout for the whole job
        print(published)
    return EXIT_OK


def _cmd_append(ns: argparse.Namespace) -> int:
    from indexer.append import AppendRequest, append_rows

    req = AppendRequest(
        datastore_root=Path(ns.datastore),
        model_dir=Path(ns.model_dir),
        pool_path=Path(ns.pool),
        warmup_dir=Path(ns.warmup_dir),
        version=ns.version,
        device=ns.device,
    )
    print(append_rows(req))
    return EXIT_OK


def _cmd_info(ns: argparse.Namespace) -> int:
    from indexer.datastore import Datastore, index_sizes

    store = Datastore.open(ns.datastore, ns.version)
    m = store.manifest
    if ns.json:
        print(json.dumps(m.model_dump(mode="json"), indent=2, sort_keys=True))
        return EXIT_OK
    proj, feats, lora = m.projector, m.features, m.lora
    print(f"datastore {store.root} version {store.version} (created {m.created_at})")
    print(f"  model      {m.model.id} sha256 {m.model.sha256[:12]}")
    print(f"  examples   {m.n} indexed, {m.n_skipped} skipped; pool {m.pool.file}")
    print(f"  projector  {proj.kind} dim {proj.dim} seed {proj.seed} scope {proj.scope}")
    print(f"  features   {feats.dtype}, train {feats.train_kind}, targets {feats.target_kind}")
    print(f"  lora       rank {lora.rank} alpha {lora.alpha} on {','.join(lora.target_modules)}")
    for c in m.checkpoints:
        step = "-" if c.step is None else str(c.step)
        print(f"  checkpoint {c.name:<20} step {step:<6} lr {c.lr:.3e} weight {c.weight:.4f}")
    sizes = index_sizes(store)
    gib = 2**30
    if m.build.exact:
        print(f"  index      exact ({m.index.factory}): a blocked scan over the stored features")
    else:
        print(
            f"  index      approximate {m.index.factory}, {len(m.shards)} shard(s), "
            f"{sizes.index_bytes / gib:.3f} GiB on disk (loaded in RAM), re-ranked exactly"
        )
    print(
        f"  storage    {len(m.shards)} shard(s); features {sizes.feature_bytes / gib:.3f} GiB on "
        f"disk, memory-mapped (page cache, not process memory); total "
        f"{sizes.total_bytes / gib:.3f} GiB"
    )
    print(
        f"  RAM        ~{sizes.expected_ram_bytes / 2**20:.1f} MiB resident for the service "
        "(ids + index), plus page cache for the features it scans"
    )
    _print_fields(store)
    print(f"  timings    {m.timings}")
    return EXIT_OK


# Values of a string or bool field that ``less-index info`` shows.
INFO_TOP_VALUES = 5


def _print_fields(store) -> None:
    """The stored pool metadata fields: kind, missing count, range or most frequent values."""
    meta = store.metadata
    if meta is None:
        print("  fields     none stored (built before pool metadata; rebuild to filter on it)")
        return
    for s in meta.summaries(top=INFO_TOP_VALUES):
        if s["kind"] in ("int", "float"):
            detail = f"{s['min']} .. {s['max']}" if s["min"] is not None else "-"
        else:
            top = ", ".join(f"{json.dumps(t['value'])} ({t['count']})" for t in s["top_values"])
            more = " ..." if s["n_distinct"] > len(s["top_values"]) else ""
            detail = f"{top}{more}"
        print(
            f"  field      {s['name']:<20} {s['kind']:<6} {s['n_distinct']} distinct, "
            f"{s['n_missing']} missing: {detail}"
        )
    for name, reason in meta.skipped.items():
        print(f"  field      {name:<20} not stored: {reason}")


def _cmd_verify(ns: argparse.Namespace) -> int:
    from indexer.datastore import Datastore
    from indexer.verify import verify_datastore

    report = verify_datastore(
        Datastore.open(ns.datastore, ns.version),
        model_dir=Path(ns.model_dir) if ns.model_dir else None,
        pool_path=[Path(p) for p in ns.pool] if ns.pool else None,
        warmup_dir=Path(ns.warmup_dir) if ns.warmup_dir else None,
        sample=ns.sample,
        device=ns.device,
    )
    print(
        json.dumps(
            {
                "version": report.version,
                "ok": report.ok,
                "bad_checksums": report.bad_checksums,
                "problems": report.problems,
                "min_cosine": report.min_cosine,
                "recall": report.recall,
            },
            indent=2,
        )
    )
    return EXIT_OK if report.ok else EXIT_UNEXPECTED


def _cmd_select(ns: argparse.Namespace) -> int:
    from indexer.datastore import Datastore
    from indexer.query import QueryEngine
    from indexer.selection_io import write_selection

    # The same request model as the service's: targets validated once, same k/fraction rule,
    # and the steering flags less-select has (less_wire.cli_options), read the same way.
    request = SelectRequest.model_validate(
        {
            **steering_options(ns),
            "targets": load_targets_jsonl(ns.targets),
            "k": ns.k,
            "fraction": ns.fraction,
            "aggregate": ns.aggregate,
            "checkpoints": ns.checkpoints.split(",") if ns.checkpoints else None,
            "search": {
                key: value
                for key, value in (
                    ("exact", ns.exact or None),
                    ("nprobe", ns.nprobe),
                    ("ef_search", ns.ef_search),
                    ("candidates", ns.candidates),
                )
                if value is not None
            }
            or None,
        }
    )
    engine = QueryEngine(Datastore.open(ns.datastore, ns.version), ns.model_dir, ns.device)
    # The engine's one path for a wire request, steered or plain, as the service's.
    selection = engine.select_request(request)
    write_selection(selection, Path(ns.out), pool_path=Path(ns.pool) if ns.pool else None)
    log.info(
        "selected %d of %d (gradient %.0f ms, search %.0f ms) -> %s",
        len(selection.ids),
        selection.n_candidates,
        selection.gradient_ms,
        selection.search_ms,
        ns.out,
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="less-index", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("warmup", help="LoRA warmup on a random fraction of the pool")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--pool", required=True, help="pool JSONL (id + messages or prompt/completion)")
    p.add_argument("--out", required=True, help="directory for checkpoint-<step>/ folders")
    p.add_argument("--device", default=None)
    add_dataclass_args(p, LoraSettings, "lora")
    add_dataclass_args(p, WarmupConfig)
    add_dataclass_args(p, TokenizationConfig)
    p.set_defaults(func=_cmd_warmup)

    p = sub.add_parser("build", help="featurize the pool and publish a datastore version")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--model-id", default=None, help="human-readable model id for the manifest")
    p.add_argument("--pool", required=True)
    p.add_argument("--warmup-dir", required=True, help="directory with checkpoint-<step>/ folders")
    p.add_argument("--out", required=True, help="datastore root directory")
    p.add_argument("--checkpoints", default=None, help="comma-separated subset of checkpoint names")
    p.add_argument(
        "--checkpoint-lr", action="append", metavar="NAME=LR", help="override a checkpoint's lr"
    )
    p.add_argument("--device", default=None, help="under torchrun: cuda means cuda:LOCAL_RANK")
    p.add_argument(
        "--dist-timeout-s",
        type=float,
        default=None,
        help="under torchrun: longest wait at a barrier between ranks, in seconds (default: env "
        "LESS_DIST_TIMEOUT_S or 1800)",
    )
    add_dataclass_args(p, ProjectionConfig, "proj")
    add_dataclass_args(p, BuildConfig)
    add_dataclass_args(p, AdamFeatureConfig, "adam")
    add_dataclass_args(p, TokenizationConfig)
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser(
        "append", help="add rows to a datastore as a new version (old shards reused, not redone)"
    )
    p.add_argument("--datastore", required=True, help="datastore root directory")
    p.add_argument("--model-dir", required=True, help="the model the datastore was built with")
    p.add_argument("--pool", required=True, help="JSONL of the new rows (pool format, new ids)")
    p.add_argument(
        "--warmup-dir", required=True, help="the warmup checkpoints the datastore was built from"
    )
    p.add_argument("--version", default=None, help="version to append to (default: CURRENT)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_append)

    for name, func, help_text in (
        ("info", _cmd_info, "show a datastore's manifest"),
        ("verify", _cmd_verify, "check checksums, norms and recomputed rows"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--datastore", required=True, help="datastore root directory")
        p.add_argument("--version", default=None, help="a published version (default: CURRENT)")
        p.set_defaults(func=func)
        if name == "info":
            p.add_argument("--json", action="store_true")
        else:
            p.add_argument("--model-dir", default=None)
            p.add_argument(
                "--pool",
                action="append",
                default=None,
                help="the built pool, and again for each appended row file (all of them)",
            )
            p.add_argument("--warmup-dir", default=None)
            p.add_argument("--sample", type=int, default=8, help="rows to recompute per checkpoint")
            p.add_argument("--device", default=None)

    p = sub.add_parser("select", help="select training examples for a target set")
    p.add_argument("--datastore", required=True)
    p.add_argument("--version", default=None)
    p.add_argument("--model-dir", required=True)
    p.add_argument(
        "--targets",
        required=True,
        help="targets JSONL (messages or prompt/completion, optional subtask)",
    )
    p.add_argument("--k", type=int, default=None)
    p.add_argument(
        "--fraction",
        type=float,
        default=None,
        help="default 0.05 when neither --k nor --token-budget is given",
    )
    p.add_argument("--aggregate", choices=["max", "mean"], default="max")
    p.add_argument("--checkpoints", default=None)
    p.add_argument(
        "--out",
        required=True,
        help="output JSONL of {rank, id, score, subtask} (and explanation, with --explain)",
    )
    search = p.add_argument_group("approximate index (ignored by exact datastores)")
    search.add_argument("--exact", action="store_true", help="scan every row exactly")
    search.add_argument("--nprobe", type=int, default=None, help="IVF lists to visit")
    search.add_argument("--ef-search", type=int, default=None, help="HNSW search breadth")
    search.add_argument(
        "--candidates", type=float, default=None, help="rows fetched per wanted row (default 2)"
    )
    add_steering_arguments(p)  # less_wire.cli_options: the same flags as less-select's
    p.add_argument("--pool", default=None, help="write the selected pool rows instead of ids")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_select)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=ns.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        status: int = ns.func(ns)
        return status
    except ValidationError as exc:
        return _fail(ns, describe_validation_errors(exc.errors()), EXIT_USAGE)
    except (LessError, InputFileError, OSError) as exc:
        return _fail(ns, str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail(ns, "interrupted; run the same command again to resume", EXIT_INTERRUPTED)


def _fail(ns: argparse.Namespace, message: str, status: int) -> int:
    print(f"less-index {ns.command}: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
