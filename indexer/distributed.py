"""One process's place in a ``torchrun`` job (torch.distributed), and the collectives a build uses.

``less-index build`` under ``torchrun`` runs one rank per process: rank 0 tokenizes the pool,
every rank featurizes the row shards it owns (shard ``i`` belongs to rank ``i % world_size``)
into the shared staging directory, and rank 0 checks the parts and publishes the one version.
No tensors travel between ranks: the process group only carries barriers and small objects
(build keys, timings, the published path), so a job on CPUs (gloo) and one on GPUs (NCCL, each
rank on ``cuda:LOCAL_RANK``) behave the same.

Not under ``torchrun`` (no ``RANK``/``WORLD_SIZE`` in the environment), or with a world of one,
:func:`init_from_env` returns the single-process ``Ranks()``, whose collectives do nothing: the
build then runs exactly as a plain ``less-index build``.

Failure handling: every collective waits at most ``timeout_s`` (``--dist-timeout-s``, env
``LESS_DIST_TIMEOUT_S``, default 30 min). A rank that raises exits non-zero and ``torchrun``
stops the others; a collective that fails (a peer died, or the timeout passed) raises
:class:`CollectiveError`, so no rank waits forever.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from less_core.errors import ConfigError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "LESS_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0
"""Longest a rank waits in one collective: it must cover rank 0 tokenizing the pool, the
slowest rank's lead when featurizing (up to one shard's time when the shards do not divide
evenly among the ranks) and rank 0's final stage (indexes, checksums, publish)."""


class CollectiveError(RuntimeError):
    """A barrier or exchange between ranks failed: a peer died or did not arrive in time."""


def default_timeout_s() -> float:
    """``LESS_DIST_TIMEOUT_S`` when set, else :data:`DEFAULT_TIMEOUT_S`."""
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be > 0, got {raw!r}")
    return value


def world_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` as ``torchrun`` sets them, or None outside torchrun.

    Raises:
        ConfigError: the variables are set but not consistent integers.
    """
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers, got "
            f"{env.get('RANK')!r}/{env.get('WORLD_SIZE')!r}/{env.get('LOCAL_RANK')!r}"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return rank, world, local


def rank_device(device: str | None, local_rank: int) -> torch.device:
    """The device of one rank: CUDA without an index becomes ``cuda:LOCAL_RANK``."""
    from indexer.model_io import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", local_rank)
    return resolved


@dataclass(frozen=True)
class Ranks:
    """This process's rank in the job. The default is a job of one process (no-op collectives)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    device: str | None = None
    """The device this rank computes on (None: whatever the caller asked for)."""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        return f"rank {self.rank}/{self.world_size}"

    def owns(self, shard: int) -> bool:
        """Shard ``shard`` is featurized by rank ``shard % world_size``."""
        return shard % self.world_size == self.rank

    def _failed(self, what: str, exc: BaseException) -> CollectiveError:
        return CollectiveError(
            f"{self.label}: {what}: {exc} (another rank failed, or did not arrive within "
            f"{self.timeout_s:.0f} s; see {TIMEOUT_ENV})"
        )

    def all_gather(self, obj: Any, what: str) -> list[Any]:
        """Every rank's ``obj``, in rank order (waits for all ranks: a barrier)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        log.debug("waiting for all ranks: %s", what)
        try:
            dist.all_gather_object(out, obj)
        except RuntimeError as exc:
            raise self._failed(what, exc) from exc
        return out

    def broadcast(self, obj: Any, what: str) -> Any:
        """Rank 0's ``obj`` on every rank (the others wait for rank 0 to get there)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        log.debug("waiting for rank 0: %s", what)
        try:
            dist.broadcast_object_list(box, src=0)
        except RuntimeError as exc:
            raise self._failed(what, exc) from exc
        return box[0]

    def agree(self, value: Any, what: str) -> None:
        """Check that every rank computed the same ``value`` (e.g. the build key).

        Raises:
            ConfigError: ranks differ; they then see different inputs (not one shared disk?).
        """
        values = self.all_gather(value, what)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise ConfigError(
                f"{self.label}: ranks {differ} computed another {what} than rank 0; every rank "
                "must read the same model, pool and checkpoints (one shared filesystem)"
            )

    def close(self) -> None:
        """Leave the process group (after a successful job)."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def init_from_env(device: str | None = None, timeout_s: float | None = None) -> Ranks:
    """Join the ``torchrun`` job this process belongs to; ``Ranks()`` when there is none.

    Backend gloo for CPU devices, NCCL for CUDA (each rank on ``cuda:LOCAL_RANK`` unless
    ``device`` names an index). The rendezvous (``MASTER_ADDR``/``MASTER_PORT``, set by
    torchrun) and every later collective wait at most ``timeout_s``. Log records of this
    process get a ``[rank r/world]`` prefix.
    """
    env = world_from_env()
    if env is None or env[1] == 1:
        return Ranks()
    rank, world, local = env
    timeout = default_timeout_s() if timeout_s is None else float(timeout_s)
    if timeout <= 0:
        raise ConfigError(f"distributed timeout must be > 0 s, got {timeout}")
    dev = rank_device(device, local)
    import torch.distributed as dist

    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        backend, device_id = "nccl", dev
    else:
        backend, device_id = "gloo", None
    ranks = Ranks(rank, world, local, timeout, str(dev))
    install_rank_prefix(ranks)
    log.info("joining a %s job of %d ranks on %s (timeout %.0f s)", backend, world, dev, timeout)
    try:
        dist.init_process_group(
            backend=backend, timeout=timedelta(seconds=timeout), device_id=device_id
        )
    except (RuntimeError, ValueError) as exc:
        raise ranks._failed("init_process_group", exc) from exc
    return ranks


class _RankFormatter(logging.Formatter):
    def __init__(self, inner: logging.Formatter | None, prefix: str):
        super().__init__()
        self.inner, self.prefix = inner or logging.Formatter(), prefix

    def format(self, record: logging.LogRecord) -> str:
        return self.prefix + self.inner.format(record)


def install_rank_prefix(ranks: Ranks) -> None:
    """Prefix every line the root logger's handlers write with ``[rank r/world] ``."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for handler in root.handlers:
        if not isinstance(handler.formatter, _RankFormatter):
            handler.setFormatter(_RankFormatter(handler.formatter, f"[{ranks.label}] "))
