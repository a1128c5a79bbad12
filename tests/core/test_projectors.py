"""Random projections: a pure function of (seed, kind, shape), with the JL property (SPEC §2.5, §5).

Everything here is checked against independent computations: a pure-Python re-implementation of
the documented counter hash, Π materialised column by column from one-hot inputs, float64
inner products, and a second Python process.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from less_core.config import ProjectionConfig
from less_core.errors import ConfigError
from less_core.projectors import (
    ModuleLayout,
    derive_key,
    make_projector,
    rademacher_block_t,
    sjlt_indices,
)

REPO = Path(__file__).resolve().parents[2]

# torch warns that sparse CSR is beta; irrelevant to what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --------------------------------------------------------------------------------------------
# An independent pure-Python (arbitrary-precision int) version of the documented generator.
# --------------------------------------------------------------------------------------------
M32 = 0xFFFFFFFF
SALT = {"rademacher": 0x52414445, "sjlt": 0x534A4C54}


def py_mix32(x: int) -> int:
    """lowbias32 on Python ints."""
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def py_derive_key(seed: int, kind: str, out_dim: int, in_dim: int, stream: int = 0) -> int:
    key = py_mix32(seed)
    for part in (SALT[kind], out_dim, in_dim & M32, in_dim >> 32, stream):
        key = py_mix32(key ^ (part & M32))
    return key


def py_col_hash(key: int, j: int) -> int:
    return py_mix32(py_mix32((j & M32) ^ key) ^ (j >> 32))


def py_rademacher_entry(key: int, r: int, j: int) -> float:
    word = py_mix32((r // 32) ^ (key ^ 0x9E3779B9))
    h = py_mix32(py_col_hash(key, j) ^ word)
    return 1.0 if (h >> (r % 32)) & 1 else -1.0


def py_sjlt_column(key: int, out_dim: int, nnz: int, j: int) -> list[tuple[int, float]]:
    block = out_dim // nnz
    out = []
    for b in range(nnz):
        h = py_mix32(py_col_hash(key, j) ^ py_mix32(b ^ (key ^ 0x85EBCA6B)))
        out.append((b * block + (h >> 1) % block, 1.0 if h & 1 else -1.0))
    return out


def materialize(projector, cols=None) -> torch.Tensor:
    """Π[:, cols].T (len(cols), P) by projecting one-hot rows (exact: one non-zero per sum)."""
    d = projector.layout.total
    cols = list(range(d)) if cols is None else list(cols)
    x = torch.zeros(len(cols), d)
    x[torch.arange(len(cols)), torch.tensor(cols)] = 1.0
    return projector.project_flat(x)


def proj(kind="rademacher", dim=64, seed=0, scope="whole", sizes=(300,), **kw):
    layout = ModuleLayout(tuple(f"m{i}" for i in range(len(sizes))), tuple(sizes))
    return make_projector(
        ProjectionConfig(kind=kind, dim=dim, seed=seed, scope=scope, **kw), layout
    )


# --------------------------------------------------------------------------------------------
# The generator itself
# --------------------------------------------------------------------------------------------
def test_derive_key_matches_python_reference():
    for seed, kind, p, d, stream in [
        (0, "rademacher", 8192, 1000, 0),
        (2**32 - 1, "sjlt", 1024, 3 * 2**33 + 17, 5),
        (123, "rademacher", 7, 2**40, 1),
    ]:
        assert derive_key(seed, kind, p, d, stream) == py_derive_key(seed, kind, p, d, stream)


def test_derive_key_depends_on_every_input():
    base = derive_key(1, "rademacher", 256, 1000)
    others = {
        derive_key(2, "rademacher", 256, 1000),
        derive_key(1, "sjlt", 256, 1000),
        derive_key(1, "rademacher", 512, 1000),
        derive_key(1, "rademacher", 256, 1001),
        derive_key(1, "rademacher", 256, 1000 + 2**32),
        derive_key(1, "rademacher", 256, 1000, stream=1),
    }
    assert base not in others and len(others) == 6


@pytest.mark.parametrize("col_start", [0, 2048 - 3, 2**32 - 5, 3 * 2**32 + 11])
def test_rademacher_block_matches_python_reference(col_start):
    """Entries equal the documented hash, including global columns beyond 2**32 (no overflow)."""
    key, out_dim, n_cols = py_derive_key(7, "rademacher", 70, 2**34), 70, 9
    block = rademacher_block_t(key, out_dim, col_start, col_start + n_cols)
    assert block.shape == (n_cols, out_dim) and block.dtype == torch.float32
    expected = torch.tensor(
        [
            [py_rademacher_entry(key, r, col_start + c) for r in range(out_dim)]
            for c in range(n_cols)
        ]
    )
    assert torch.equal(block, expected)


@pytest.mark.parametrize("col_start", [0, 2**32 - 4])
def test_sjlt_indices_match_python_reference(col_start):
    key, out_dim, nnz, n_cols = py_derive_key(3, "sjlt", 96, 2**33), 96, 4, 8
    rows, signs = sjlt_indices(key, out_dim, nnz, col_start, col_start + n_cols)
    assert rows.shape == signs.shape == (nnz, n_cols)
    for c in range(n_cols):
        got = [(int(rows[b, c]), float(signs[b, c])) for b in range(nnz)]
        assert got == py_sjlt_column(key, out_dim, nnz, col_start + c)


def test_generator_is_pinned():
    """Golden values: Π must never change between code versions, or stored datastores break.

    (They are what the implementation produced when these tests were written; the Python
    reference above agrees with them.)
    """
    key = derive_key(0, "rademacher", 8192, 1_000_000)
    assert key == py_derive_key(0, "rademacher", 8192, 1_000_000)
    block = rademacher_block_t(key, 8192, 999_990, 1_000_000)
    bits = int((block > 0).sum())
    signature = [py_rademacher_entry(key, r, 999_995) for r in (0, 1, 31, 32, 8191)]
    assert block[5, [0, 1, 31, 32, 8191]].tolist() == signature
    assert bits == GOLDEN_POSITIVE_BITS
    assert key == GOLDEN_KEY


GOLDEN_KEY = 1989238257
GOLDEN_POSITIVE_BITS = 41027  # of 81920 signs


# --------------------------------------------------------------------------------------------
# Determinism across processes and thread counts
# --------------------------------------------------------------------------------------------
SEED, DIM = 4_000_000_123, 240  # 240 = 3 modules x 80, divisible by sjlt_nnz=4
SIZES = (1500, 2600, 777)  # several 2048-column dense chunks, uneven modules
CASES = [(k, s) for k in ("rademacher", "sjlt") for s in ("whole", "per_module")]

CHILD = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("ignore")
    import torch
    from less_core.config import ProjectionConfig
    from less_core.projectors import (
        ModuleLayout, derive_key, make_projector, rademacher_block_t, sjlt_indices,
    )

    inp, out = sys.argv[1], sys.argv[2]
    same_threads, other_threads = int(sys.argv[3]), int(sys.argv[4])
    data = torch.load(inp)
    layout = ModuleLayout(tuple(data["names"]), tuple(data["sizes"]))
    res = {}
    for label, threads in (("same", same_threads), ("other", other_threads)):
        torch.set_num_threads(threads)
        res[label + ":threads"] = torch.get_num_threads()
        for kind, scope in data["cases"]:
            cfg = ProjectionConfig(kind=kind, dim=data["dim"], seed=data["seed"], scope=scope)
            res[f"{label}:{kind}:{scope}"] = make_projector(cfg, layout).project(data["blocks"])
        key = derive_key(data["seed"], "rademacher", data["dim"], layout.total)
        res[label + ":rad_block"] = rademacher_block_t(key, data["dim"], 0, layout.total)
        key = derive_key(data["seed"], "sjlt", data["dim"], layout.total)
        rows, signs = sjlt_indices(key, data["dim"], 4, 0, layout.total)
        res[label + ":sjlt_rows"], res[label + ":sjlt_signs"] = rows, signs
    torch.save(res, out)
    """
)


def test_deterministic_across_processes_and_thread_counts(tmp_path):
    layout = ModuleLayout(("a", "b", "c"), SIZES)
    gen = torch.Generator().manual_seed(11)
    blocks = [torch.randn(4, s, generator=gen) for s in SIZES]
    inp, out = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save(
        {
            "names": list(layout.names),
            "sizes": list(SIZES),
            "blocks": blocks,
            "cases": CASES,
            "dim": DIM,
            "seed": SEED,
        },
        inp,
    )
    parent_threads = torch.get_num_threads()
    other_threads = 1 if parent_threads > 1 else 2
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(inp), str(out), str(parent_threads), str(other_threads)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    child = torch.load(out)
    assert child["same:threads"] == parent_threads and child["other:threads"] == other_threads

    # Π itself is bit-identical whatever the process or the thread count.
    key = derive_key(SEED, "rademacher", DIM, layout.total)
    rad = rademacher_block_t(key, DIM, 0, layout.total)
    key = derive_key(SEED, "sjlt", DIM, layout.total)
    rows, signs = sjlt_indices(key, DIM, 4, 0, layout.total)
    for label in ("same", "other"):
        assert torch.equal(child[label + ":rad_block"], rad)
        assert torch.equal(child[label + ":sjlt_rows"], rows)
        assert torch.equal(child[label + ":sjlt_signs"], signs)

    for kind, scope in CASES:
        mine = make_projector(ProjectionConfig(kind=kind, dim=DIM, seed=SEED, scope=scope), layout)
        mine = mine.project(blocks)
        assert mine.shape == (4, DIM)
        # Another process with the same thread count: bit-identical features.
        assert torch.equal(child[f"same:{kind}:{scope}"], mine), (kind, scope)
        theirs = child[f"other:{kind}:{scope}"]
        if kind == "sjlt":
            # The sparse product sums in a fixed order: bit-identical at any thread count.
            assert torch.equal(theirs, mine), (kind, scope)
        else:
            # The dense product goes through BLAS, whose reduction order depends on the thread
            # count: same Π (checked above), features equal to float32 rounding only.
            torch.testing.assert_close(theirs, mine, rtol=1e-5, atol=1e-5 * mine.abs().max().item())


# --------------------------------------------------------------------------------------------
# Layout independence (scope "whole") and per-module structure
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rademacher", "sjlt"])
def test_whole_scope_is_independent_of_block_layout(kind):
    """The key hashes (seed, kind, P, total d), and columns are global: the split is irrelevant."""
    split = proj(kind, dim=128, seed=5, sizes=(3000, 5000))
    single = proj(kind, dim=128, seed=5, sizes=(8000,))
    other_d = proj(kind, dim=128, seed=5, sizes=(3000, 5001))
    cols = [0, 1, 2047, 2048, 2999, 3000, 3001, 5047, 5048, 7999] + list(range(100, 8000, 97))
    pi_split, pi_single = materialize(split, cols), materialize(single, cols)
    assert torch.equal(pi_split, pi_single)
    # Same column set of a different total d: a different key, a different matrix.
    assert not torch.equal(materialize(other_d, cols), pi_single)

    x = torch.randn(6, 8000, generator=torch.Generator().manual_seed(0))
    y_split = split.project([x[:, :3000], x[:, 3000:]])
    y_single = single.project([x])
    # Same Π, different summation order (per-module chunks): equal to float32 rounding.
    torch.testing.assert_close(
        y_split, y_single, rtol=1e-6, atol=2e-6 * y_single.abs().max().item()
    )
    # project_flat is project over the layout's split.
    assert torch.equal(split.project_flat(x), split.project([x[:, :3000], x[:, 3000:]]))
    # And both agree with Π applied in float64.
    pi = materialize(single).double()  # (8000, P)
    torch.testing.assert_close(y_single.double(), x.double() @ pi, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", ["rademacher", "sjlt"])
def test_whole_scope_matrix_equals_generator(kind):
    p = proj(kind, dim=64, seed=9, sizes=(100, 150, 50))
    pi_t = materialize(p)
    key = derive_key(9, kind, 64, 300)
    if kind == "rademacher":
        expected = rademacher_block_t(key, 64, 0, 300) * (1 / math.sqrt(64))
    else:
        rows, signs = sjlt_indices(key, 64, 4, 0, 300)
        expected = torch.zeros(300, 64)
        for b in range(4):
            expected[torch.arange(300), rows[b]] = signs[b] / 2.0
    assert torch.equal(pi_t, expected)


@pytest.mark.parametrize("kind", ["rademacher", "sjlt"])
def test_per_module_scope_is_block_diagonal(kind):
    sizes, dim = (100, 60, 40), 24  # 8 output dims per module
    p = proj(kind, dim=dim, seed=2, scope="per_module", sizes=sizes)
    pi_t = materialize(p)  # (200, 24)
    offs = [0, 100, 160, 200]
    for m in range(3):
        rows = pi_t[offs[m] : offs[m + 1]]
        assert torch.count_nonzero(rows[:, : 8 * m]) == 0
        assert torch.count_nonzero(rows[:, 8 * (m + 1) :]) == 0
        # module m's own block comes from its own key (stream m + 1, its own shape)
        key = derive_key(2, kind, 8, sizes[m], stream=m + 1)
        if kind == "rademacher":
            expected = rademacher_block_t(key, 8, 0, sizes[m]) / math.sqrt(8)
        else:
            idx, signs = sjlt_indices(key, 8, 4, 0, sizes[m])
            expected = torch.zeros(sizes[m], 8)
            for b in range(4):
                expected[torch.arange(sizes[m]), idx[b]] = signs[b] / 2.0
        assert torch.equal(rows[:, 8 * m : 8 * (m + 1)], expected)
    # A module's projection does not depend on the other modules.
    x = torch.randn(3, 200, generator=torch.Generator().manual_seed(1))
    y = p.project_flat(x)
    alone = proj(kind, dim=8, seed=2, scope="per_module", sizes=(100,))
    # the single-module projector uses stream 1 like module 0 above
    torch.testing.assert_close(y[:, :8], alone.project_flat(x[:, :100]), rtol=0, atol=0)


def test_per_module_uneven_dims():
    p = proj("rademacher", dim=10, seed=0, scope="per_module", sizes=(5, 6, 7))
    pi_t = materialize(p)
    assert pi_t.shape == (18, 10)
    # dims 4, 3, 3: the first `dim % n` modules get one more
    assert torch.count_nonzero(pi_t[:5, :4]) == 20 and torch.count_nonzero(pi_t[:5, 4:]) == 0
    assert torch.count_nonzero(pi_t[5:11, 4:7]) == 18 and torch.count_nonzero(pi_t[11:, 7:]) == 21
    assert torch.allclose(pi_t[:5, :4].abs(), torch.tensor(0.5))
    assert torch.allclose(pi_t[5:11, 4:7].abs(), torch.tensor(1 / math.sqrt(3)))


# --------------------------------------------------------------------------------------------
# Π is what it claims to be
# --------------------------------------------------------------------------------------------
def test_dense_matrix_is_rademacher():
    d, P = 300, 64
    pi = materialize(proj("rademacher", dim=P, seed=1, sizes=(120, 180))).T  # (P, d)
    assert pi.shape == (P, d)
    assert torch.equal(pi.abs(), torch.full((P, d), 1 / math.sqrt(P)))
    s = torch.sign(pi).double()
    # Balanced: sums of n independent signs have std sqrt(n).
    assert abs(s.sum()) < 4 * math.sqrt(P * d)
    assert s.sum(dim=1).abs().max() < 5 * math.sqrt(d)  # rows
    assert s.sum(dim=0).abs().max() < 5 * math.sqrt(P)  # columns
    # Pairwise independent: no two rows / columns correlated beyond chance
    # (catches e.g. a word hash reused for rows r and r + 32).
    row_corr = s @ s.T - d * torch.eye(P, dtype=torch.float64)
    assert row_corr.abs().max() < 5.5 * math.sqrt(d)
    col_corr = s.T @ s - P * torch.eye(d, dtype=torch.float64)
    assert col_corr.abs().max() < 6 * math.sqrt(P)

    other_seed = materialize(proj("rademacher", dim=P, seed=2, sizes=(120, 180))).T
    agree = (torch.sign(other_seed) == torch.sign(pi)).double().mean()
    assert abs(agree - 0.5) < 4 * 0.5 / math.sqrt(P * d)
    sjlt = materialize(proj("sjlt", dim=P, seed=1, sizes=(120, 180))).T
    assert not torch.equal(sjlt, pi)
    # Also: kind is part of the key, not only of the construction.
    k_r, k_s = derive_key(1, "rademacher", P, d), derive_key(1, "sjlt", P, d)
    assert not torch.equal(rademacher_block_t(k_r, P, 0, d), rademacher_block_t(k_s, P, 0, d))


@pytest.mark.parametrize("nnz", [1, 4, 8])
def test_sjlt_matrix_structure(nnz):
    d, P = 300, 64
    block = P // nnz
    pi = materialize(proj("sjlt", dim=P, seed=3, sizes=(300,), sjlt_nnz=nnz)).T  # (P, d)
    nz = pi != 0
    assert torch.equal(nz.sum(dim=0), torch.full((d,), nnz))
    assert torch.equal(pi[nz].abs(), torch.full((d * nnz,), 1 / math.sqrt(nnz)))
    for b in range(nnz):
        assert torch.equal(
            nz[b * block : (b + 1) * block].sum(dim=0), torch.ones(d, dtype=torch.long)
        )
    # Rows are hit roughly uniformly; signs balanced.
    hits = nz.sum(dim=1).double()
    mean_hits = d * nnz / P
    assert (hits - mean_hits).abs().max() < 5 * math.sqrt(mean_hits)
    assert abs(torch.sign(pi).sum()) < 4 * math.sqrt(d * nnz)
    other = materialize(proj("sjlt", dim=P, seed=4, sizes=(300,), sjlt_nnz=nnz)).T
    assert not torch.equal(other, pi)


# --------------------------------------------------------------------------------------------
# JL property
# --------------------------------------------------------------------------------------------
def _jl_vectors(n=50, d=20000):
    """Unit vectors with inner products spread over [-1, 1] (a few shared latent directions)."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((d, 3))
    coef = rng.standard_normal((n, 3)) * rng.uniform(0, 3, size=(n, 1))
    x = latent @ coef.T + rng.standard_normal((d, n)) * np.sqrt(1.0)
    x = (x / np.linalg.norm(x, axis=0)).T
    return x  # (n, d) float64


@pytest.mark.parametrize("kind", ["rademacher", "sjlt"])
def test_jl_inner_products_and_norms(kind):
    x64 = _jl_vectors()
    n, d = x64.shape
    P = 2048
    p = proj(kind, dim=P, seed=17, sizes=(7000, 13000))
    x = torch.from_numpy(x64).float()
    y = p.project_flat(x).double().numpy()
    true = x64 @ x64.T
    est = y @ y.T
    assert np.abs(true[np.triu_indices(n, 1)]).max() > 0.5  # the test spans correlated pairs too
    # <Πx,Πy> is unbiased with variance ≈ (1 + <x,y>²)/P (Rademacher and block-SJLT alike).
    sigma = np.sqrt((1 + true**2) / P)
    iu = np.triu_indices(n, 1)
    z = ((est - true) / sigma)[iu]
    assert np.abs(z).max() < 4.5  # 1225 pairs: P(|Z| > 4.5) * 1225 ≈ 1%
    # The error has the JL scale (loose: the 1225 errors share 50 vectors and one Π, so they are
    # correlated and their mean square fluctuates well beyond the iid rate).
    assert 0.4 < np.mean(z**2) < 2.0
    assert abs(np.mean(z)) < 4 / np.sqrt(len(z)) * 3  # loose: pairs share vectors
    norms = np.linalg.norm(y, axis=1)
    assert np.abs(norms - 1).max() < 4 / np.sqrt(P)
    # A batch equals projecting the rows one by one (10 of them, to keep the test fast).
    one_by_one = torch.cat([p.project_flat(x[i : i + 1]) for i in range(10)])
    torch.testing.assert_close(one_by_one, torch.from_numpy(y[:10]).float(), rtol=1e-5, atol=1e-6)


def test_dense_cache_gives_identical_results():
    sizes = (3000, 2100)
    x = torch.randn(5, 5100, generator=torch.Generator().manual_seed(3))
    cached = proj("rademacher", dim=96, seed=8, sizes=sizes, dense_cache_mb=64)
    uncached = proj("rademacher", dim=96, seed=8, sizes=sizes, dense_cache_mb=0)
    first = cached.project_flat(x)
    assert cached._cache_bytes > 0 and uncached._cache_bytes == 0
    assert torch.equal(first, uncached.project_flat(x))
    assert torch.equal(first, cached.project_flat(x))  # cache hits
    assert torch.equal(first, uncached.project_flat(x))
    # A cache that holds only part of the blocks.
    partial = proj("rademacher", dim=96, seed=8, sizes=sizes, dense_cache_mb=1)
    assert torch.equal(first, partial.project_flat(x)) and torch.equal(
        first, partial.project_flat(x)
    )


def test_input_dtypes_are_projected_as_float32():
    p = proj("rademacher", dim=32, seed=0, sizes=(50,))
    x = torch.randn(2, 50, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    y = p.project_flat(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, p.project_flat(x.float()))


# --------------------------------------------------------------------------------------------
# Configuration errors
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "gaussian"},
        {"kind": "sjlt", "dim": 30, "sjlt_nnz": 4},
        {"seed": -1},
        {"seed": 2**32},
        {"dim": 0},
        {"scope": "per_layer"},
        {"sjlt_nnz": 0},
        {"dense_cache_mb": -1},
    ],
)
def test_projection_config_errors(kwargs):
    with pytest.raises(ConfigError):
        ProjectionConfig(**kwargs)


def test_seed_range_edges_are_valid():
    for seed in (0, 2**32 - 1):
        p = proj("rademacher", dim=8, seed=seed, sizes=(10,))
        assert p.project_flat(torch.ones(1, 10)).shape == (1, 8)


def test_projector_construction_errors():
    with pytest.raises(ConfigError):
        proj("rademacher", dim=2, scope="per_module", sizes=(4, 4, 4))  # dim < modules
    with pytest.raises(ConfigError):
        proj("sjlt", dim=8, scope="per_module", sizes=(4, 4, 4))  # 3, 3, 2 not divisible by 4
    with pytest.raises(ConfigError):
        ModuleLayout(("a", "b"), (3,))
    with pytest.raises(ConfigError):
        ModuleLayout((), ())


def test_block_shape_errors():
    p = proj("rademacher", dim=8, sizes=(4, 6))
    with pytest.raises(ConfigError):
        p.project([torch.zeros(2, 4), torch.zeros(2, 7)])  # wrong width
    with pytest.raises(ConfigError):
        p.project([torch.zeros(2, 4), torch.zeros(3, 6)])  # batch differs
    with pytest.raises(ConfigError):
        p.project([torch.zeros(2, 4)])  # too few blocks
    with pytest.raises(ConfigError):
        p.project([torch.zeros(4), torch.zeros(6)])  # not batched


@pytest.mark.parametrize("shape", [(2, 11), (2, 9), (10,)])
def test_project_flat_wrong_width_is_config_error(shape):
    p = proj("rademacher", dim=8, sizes=(4, 6))
    with pytest.raises(ConfigError):
        p.project_flat(torch.zeros(shape))


# --------------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_cuda_matches_cpu():
    for col_start in (0, 2**32 - 100):
        key = derive_key(SEED, "rademacher", 1000, 2**33)
        cpu = rademacher_block_t(key, 1000, col_start, col_start + 3000)
        gpu = rademacher_block_t(key, 1000, col_start, col_start + 3000, device="cuda")
        assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
        key = derive_key(SEED, "sjlt", 1000, 2**33)
        rows_c, signs_c = sjlt_indices(key, 1000, 4, col_start, col_start + 3000)
        rows_g, signs_g = sjlt_indices(key, 1000, 4, col_start, col_start + 3000, device="cuda")
        assert torch.equal(rows_g.cpu(), rows_c) and torch.equal(signs_g.cpu(), signs_c)

    layout = ModuleLayout(("a", "b", "c"), SIZES)
    blocks = [
        torch.randn(4, s, generator=torch.Generator().manual_seed(i)) for i, s in enumerate(SIZES)
    ]
    for kind, scope in CASES:
        p = make_projector(ProjectionConfig(kind=kind, dim=DIM, seed=SEED, scope=scope), layout)
        cpu = p.project(blocks)
        gpu = p.project([b.cuda() for b in blocks])
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5 * cpu.abs().max().item())
