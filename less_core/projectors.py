"""Random projections that are a pure function of (seed, kind, shape).

Implementations:
- ``RademacherProjector``: dense Π with entries ±1/sqrt(P), as in LESS/TRAK. Cost O(P·d) per
  example; generated blocks are cached up to a memory budget and regenerated beyond it.
- ``SJLTProjector``: sparse JL (CountSketch with ``s`` non-zeros per input coordinate, one in each
  of ``s`` equal row blocks, values ±1/sqrt(s)). Cost O(s·d) per example.

Every entry of Π is computed by a counter-based integer hash of (key, row, column), evaluated
with int64 tensor arithmetic that never overflows. It is therefore bit-identical on any device,
in any process and for any block layout: the same Π for the pool and for every later query.
A projector is applied to a gradient given as a list of per-module blocks (B, d_m), so the full
LoRA gradient is never flattened into one vector.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from less_core.config import ProjectionConfig
from less_core.errors import ConfigError

_M32 = 0xFFFFFFFF
_KIND_SALT = {"rademacher": 0x52414445, "sjlt": 0x534A4C54}
# Columns of a dense block generated at once: bounds the temporary (P x chunk) matrix.
_DENSE_CHUNK_COLS = 2048


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32) without int64 overflow (split c into 16-bit halves)."""
    hi, lo = c >> 16, c & 0xFFFF
    return ((((x * hi) & 0xFFFF) << 16) + x * lo) & _M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (lowbias32) on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mix_int(x: int) -> int:
    return int(mix32(torch.tensor([x & _M32], dtype=torch.int64)).item())


def derive_key(seed: int, kind: str, out_dim: int, in_dim: int, stream: int = 0) -> int:
    """The 32-bit key of a projector: a hash of (seed, kind, shape, stream)."""
    key = _mix_int(seed)
    for part in (_KIND_SALT[kind], out_dim, in_dim & _M32, in_dim >> 32, stream):
        key = _mix_int(key ^ (part & _M32))
    return key


def _column_hash(key: int, cols: torch.Tensor) -> torch.Tensor:
    """Per-column 32-bit hashes for global column indices ``cols`` (int64, may exceed 2**32)."""
    h = mix32((cols & _M32) ^ key)
    return mix32(h ^ (cols >> 32))


def _byte_sign_table(device: torch.device | str) -> torch.Tensor:
    """(256, 8) table: row b holds the ±1 signs of the 8 bits of byte b, least significant first."""
    bits = (torch.arange(256, device=device)[:, None] >> torch.arange(8, device=device)) & 1
    return bits.to(torch.float32).mul_(2.0).sub_(1.0)


def rademacher_block_t(
    key: int, out_dim: int, col_start: int, col_end: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Columns [col_start, col_end) of the dense Rademacher matrix, transposed and unscaled ±1.

    Entry (row r, column j) is bit (r mod 32) of hash(column j, word r // 32). One hash gives
    32 signs, expanded bytewise through a lookup table straight into the transposed layout.

    Returns:
        Float32 tensor of shape (col_end - col_start, out_dim): rows are columns of Π.
    """
    cols = torch.arange(col_start, col_end, dtype=torch.int64, device=device)
    col_h = _column_hash(key, cols)  # (C,)
    n_words = (out_dim + 31) // 32
    words = mix32(torch.arange(n_words, dtype=torch.int64, device=device) ^ (key ^ 0x9E3779B9))
    h = mix32(col_h[:, None] ^ words[None, :])  # (C, W)
    shifts = torch.arange(0, 32, 8, dtype=torch.int64, device=device)
    byte_vals = (h[..., None] >> shifts) & 0xFF  # (C, W, 4)
    signs = torch.nn.functional.embedding(byte_vals, _byte_sign_table(device))  # (C, W, 4, 8)
    return signs.reshape(cols.numel(), n_words * 32)[:, :out_dim]


def sjlt_indices(
    key: int,
    out_dim: int,
    nnz: int,
    col_start: int,
    col_end: int,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices and signs of the sparse JL matrix for columns [col_start, col_end).

    Returns:
        rows: int64 (nnz, C), the j-th non-zero of each column lies in row block j.
        signs: float32 (nnz, C), ±1 (unscaled).
    """
    cols = torch.arange(col_start, col_end, dtype=torch.int64, device=device)
    col_h = _column_hash(key, cols)
    block = out_dim // nnz
    j = torch.arange(nnz, dtype=torch.int64, device=device)
    h = mix32(col_h[None, :] ^ mix32(j ^ (key ^ 0x85EBCA6B))[:, None])  # (nnz, C)
    rows = j[:, None] * block + (h >> 1) % block
    signs = (h & 1).to(torch.float32).mul_(2.0).sub_(1.0)
    return rows, signs


@dataclass(frozen=True)
class ModuleLayout:
    """Names and sizes of the gradient blocks (one per LoRA weight matrix), in a fixed order."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.sizes) or not self.names:
            raise ConfigError("module layout needs one size per name and at least one module")

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def offsets(self) -> tuple[int, ...]:
        out, acc = [], 0
        for s in self.sizes:
            out.append(acc)
            acc += s
        return tuple(out)

    def to_dict(self) -> dict[str, list[str] | list[int]]:
        return {"names": list(self.names), "sizes": list(self.sizes)}


class Projector(ABC):
    """Maps per-module gradient blocks [(B, d_m)] to (B, P) float32 features."""

    def __init__(self, config: ProjectionConfig, layout: ModuleLayout):
        self.config = config
        self.layout = layout
        # In "per_module" scope each module gets its own projector of dim P_m, concatenated.
        if config.scope == "whole":
            self._out_dims = (config.dim,) * len(layout.sizes)
        else:
            n = len(layout.sizes)
            if config.dim < n:
                raise ConfigError(
                    f"per_module projection needs dim >= {n} modules, got {config.dim}"
                )
            base, extra = divmod(config.dim, n)
            self._out_dims = tuple(base + (1 if i < extra else 0) for i in range(n))
            if config.kind == "sjlt" and any(d % config.sjlt_nnz for d in self._out_dims):
                raise ConfigError("per_module sjlt needs every module's dim divisible by sjlt_nnz")

    @property
    def dim(self) -> int:
        return self.config.dim

    def _module_key_and_cols(self, m: int) -> tuple[int, int, int]:
        """(key, column offset, out dim) of module m's part of Π."""
        cfg = self.config
        if cfg.scope == "whole":
            key = derive_key(cfg.seed, cfg.kind, cfg.dim, self.layout.total)
            return key, self.layout.offsets[m], cfg.dim
        key = derive_key(cfg.seed, cfg.kind, self._out_dims[m], self.layout.sizes[m], stream=m + 1)
        return key, 0, self._out_dims[m]

    def project(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Project a batch of gradients given block by block.

        Args:
            blocks: one tensor per module of the layout, each (B, d_m), on any device.

        Returns:
            (B, P) float32 tensor on the blocks' device.
        """
        if len(blocks) != len(self.layout.sizes):
            raise ConfigError(f"expected {len(self.layout.sizes)} blocks, got {len(blocks)}")
        batch = blocks[0].shape[0]
        device = blocks[0].device
        parts = []
        out = torch.zeros(batch, self.config.dim, dtype=torch.float32, device=device)
        for m, x in enumerate(blocks):
            if x.shape != (batch, self.layout.sizes[m]):
                raise ConfigError(
                    f"block {self.layout.names[m]} has shape {tuple(x.shape)}, "
                    f"expected ({batch}, {self.layout.sizes[m]})"
                )
            x = x.to(torch.float32)
            if self.config.scope == "whole":
                self._accumulate(m, x, out)
            else:
                part = torch.zeros(batch, self._out_dims[m], dtype=torch.float32, device=device)
                self._accumulate(m, x, part)
                parts.append(part)
        return torch.cat(parts, dim=1) if parts else out

    def project_flat(self, x: torch.Tensor) -> torch.Tensor:
        """Project (B, d) full gradients (d = layout total); same result as ``project``."""
        if x.ndim != 2 or x.shape[1] != self.layout.total:
            raise ConfigError(f"expected (B, {self.layout.total}) gradients, got {tuple(x.shape)}")
        return self.project(list(torch.split(x, list(self.layout.sizes), dim=1)))

    @abstractmethod
    def _accumulate(self, m: int, x: torch.Tensor, out: torch.Tensor) -> None:
        """out += x @ Π_m^T for module m; x (B, d_m), out (B, P_m)."""


class RademacherProjector(Projector):
    """Dense ±1/sqrt(P) projection (the LESS/TRAK choice)."""

    def __init__(self, config: ProjectionConfig, layout: ModuleLayout):
        super().__init__(config, layout)
        self._cache: dict[tuple[int, int, str], torch.Tensor] = {}
        self._cache_bytes = 0

    def _block(self, m: int, c0: int, c1: int, device: torch.device) -> torch.Tensor:
        cache_key = (m, c0, str(device))
        hit = self._cache.get(cache_key)
        if hit is not None:
            return hit
        key, offset, out_dim = self._module_key_and_cols(m)
        block = rademacher_block_t(key, out_dim, offset + c0, offset + c1, device)
        block = block.mul_(1.0 / math.sqrt(out_dim)).contiguous()
        nbytes = block.numel() * block.element_size()
        if self._cache_bytes + nbytes <= self.config.dense_cache_mb * 2**20:
            self._cache[cache_key] = block
            self._cache_bytes += nbytes
        return block

    def _accumulate(self, m: int, x: torch.Tensor, out: torch.Tensor) -> None:
        d_m = x.shape[1]
        for c0 in range(0, d_m, _DENSE_CHUNK_COLS):
            c1 = min(d_m, c0 + _DENSE_CHUNK_COLS)
            out.addmm_(x[:, c0:c1], self._block(m, c0, c1, x.device))


class SJLTProjector(Projector):
    """Sparse JL projection: s non-zeros ±1/sqrt(s) per input coordinate."""

    def __init__(self, config: ProjectionConfig, layout: ModuleLayout):
        super().__init__(config, layout)
        self._cache: dict[tuple[int, str], torch.Tensor] = {}

    def _matrix(self, m: int, device: torch.device) -> torch.Tensor:
        """Module m's part of Π as a sparse CSR tensor of shape (P_m, d_m)."""
        cache_key = (m, str(device))
        if cache_key not in self._cache:
            key, offset, out_dim = self._module_key_and_cols(m)
            d_m, nnz = self.layout.sizes[m], self.config.sjlt_nnz
            rows, signs = sjlt_indices(key, out_dim, nnz, offset, offset + d_m, device)
            cols = torch.arange(d_m, device=device).expand(nnz, -1)
            with warnings.catch_warnings():
                # torch flags CSR as beta; indices here are valid by construction.
                warnings.simplefilter("ignore", UserWarning)
                coo = torch.sparse_coo_tensor(
                    torch.stack([rows.reshape(-1), cols.reshape(-1)]),
                    signs.reshape(-1) / math.sqrt(nnz),
                    (out_dim, d_m),
                    check_invariants=False,
                )
                self._cache[cache_key] = coo.coalesce().to_sparse_csr()
        return self._cache[cache_key]

    def _accumulate(self, m: int, x: torch.Tensor, out: torch.Tensor) -> None:
        out.add_(torch.sparse.mm(self._matrix(m, x.device), x.T).T)


def make_projector(config: ProjectionConfig, layout: ModuleLayout) -> Projector:
    """The projector of ``config.kind`` over ``layout``."""
    if config.kind == "rademacher":
        return RademacherProjector(config, layout)
    if config.kind == "sjlt":
        return SJLTProjector(config, layout)
    raise ConfigError(f"unknown projector kind {config.kind!r}")
