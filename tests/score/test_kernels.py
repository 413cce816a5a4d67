"""Kernels: 64-bit offsets, CPU twins vs GPU kernels (gpu marker), CUDA sources compile, backends."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import scipy.sparse as sp

import atlas.score as tl
from atlas._kernels import cpu, kernel_sources
from atlas.core.backend import gpu_available, resolve_backend
from atlas.core.errors import AtlasError
from atlas.score.exec_cpu import rows_chunk as cpu_rows
from atlas.score.matrix import _rank_arrays, membership
from atlas.score.rowkernel import RowKernel
from atlas.score.sources import plan_chunks

pytestmark = pytest.mark.filterwarnings("ignore")
BIG = np.int64(2**33 + 12345)  # an offset far past 2^31


def test_plan_chunks_offsets_past_int32():
    nnz_per_row = np.array([3, 0, 2**20, 5, 2**31, 7], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(nnz_per_row)]) + BIG
    chunks = plan_chunks(indptr, chunk_size=4, max_nnz=2**21)
    assert chunks == [(0, 4), (4, 5), (5, 6)]  # the 2^31-value row gets a chunk of its own
    assert plan_chunks(indptr, chunk_size=2, max_nnz=2**40) == [(0, 2), (2, 4), (4, 6)]
    for a, b in chunks:
        assert indptr[b] - indptr[a] <= 2**21 or b - a == 1
        assert isinstance(int(indptr[b] - indptr[a]), int)
    assert cpu.chunk_span(indptr, 4, 5) == (int(indptr[4]), int(indptr[4]) + 2**31)


def _chunk(seed=0, n=40, g=60):
    rng = np.random.default_rng(seed)
    x = sp.random(n, g, density=0.3, format="csr", random_state=seed, dtype=np.float32)
    x.data = np.ceil(x.data * 6).astype(np.float32)
    x.data[::7] = -x.data[::7]  # negatives exercise the rank conventions
    return x, rng


@pytest.mark.parametrize("kind", ["weighted_sum", "rank0", "rank1", "fold"])
def test_cpu_kernels_with_absolute_int64_offsets(kind):
    """The kernels read entry indptr[i] - base: an indptr shifted past 2^31 must give the same result."""
    x, _ = _chunk()
    ip = x.indptr.astype(np.int64)
    sets = [np.arange(0, 20), np.arange(10, 45)]
    if kind == "fold":
        a, b = np.zeros(60, np.float32), np.zeros(60, np.float32)
        na, nb = np.zeros(60, np.int64), np.zeros(60, np.int64)
        bounds = np.array([0, 30, 60], np.int64)
        cpu.gene_fold(ip, np.int64(0), x.indices, x.data, 0, 1e4, a, na, bounds)
        cpu.gene_fold(ip + BIG, BIG, x.indices, x.data, 0, 1e4, b, nb, bounds)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, np.asarray(x.sum(axis=0)).ravel(), rtol=1e-6)
        np.testing.assert_array_equal(na, np.bincount(x.indices, minlength=60))
        np.testing.assert_array_equal(nb, na)
        return
    if kind == "weighted_sum":
        kern = RowKernel("weighted_sum", 2, membership(sets, 60, [0.5, 0.25]), {"mode": 0, "target": 1e4})
    else:
        tb = np.arange(60, dtype=np.int64)
        kern = RowKernel(
            "rank", 2, _rank_arrays(sets, 60, tb, tb), {"mode": int(kind[-1]), "cap": 9, "nvar": 60}
        )
    ref, _ = cpu_rows(kern, ip, x.indices, x.data)
    got, _ = cpu_rows(kern, ip + BIG, x.indices, x.data)
    np.testing.assert_array_equal(ref, got)


def test_backend_resolution():
    assert resolve_backend("cpu") == "cpu"
    with pytest.raises(AtlasError, match="not one of"):
        resolve_backend("tpu")
    if not gpu_available():
        assert resolve_backend("auto") == "cpu"
        with pytest.raises(AtlasError, match="backend='gpu' was requested but no GPU is usable"):
            resolve_backend("gpu")
        x = sp.random(10, 10, density=0.5, format="csr", dtype=np.float32)
        with pytest.raises(AtlasError, match="no GPU"):
            tl.score_matrix(x, [np.arange(3)], method="mean", backend="gpu")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("src", kernel_sources(), ids=lambda p: p.name)
def test_cuda_sources_compile(src, tmp_path):
    """Every .cu compiles, with every template instantiation the launchers can ask for."""
    from atlas._kernels import KERNEL_DIR

    exprs = _name_expressions().get(src.stem, ())
    body = "\n".join(f"void* i{k} = (void*)&{e};" for k, e in enumerate(exprs))
    unit = tmp_path / f"inst_{src.stem}.cu"
    unit.write_text(f'#include "{src}"\n{body}\n')
    res = subprocess.run(
        ["nvcc", "-std=c++17", "-arch=sm_90", f"-I{KERNEL_DIR}", "-c", str(unit), "-o", "/dev/null"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr


def _name_expressions():
    """The launchers' instantiation list, read without importing cupy."""
    import ast
    from pathlib import Path

    from atlas._kernels import KERNEL_DIR

    tree = ast.parse(Path(KERNEL_DIR / "gpu.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "name_expressions")
    ns: dict = {"np": np}
    ctypes = {"float", "double", "int", "long long"}
    src = ast.unparse(fn).replace("_CTYPE.values()", repr(tuple(sorted(ctypes))))
    exec(src, ns)  # noqa: S102 - our own source
    return ns["name_expressions"]()


# ------------------------------------------------------------------------------------------ GPU
def _gpu_vs_cpu(method, x, sets, **kw):
    import cupy as cp
    import cupyx.scipy.sparse as csp

    cpu_res, _ = tl.score_matrix(x, sets, method=method, backend="cpu", **kw)
    # cupyx sparse holds only float/bool data: integer counts live on the device as float32 (exact below 2^24)
    dev = csp.csr_matrix(x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32))
    dev_res, _ = tl.score_matrix(dev, sets, method=method, backend="gpu", **kw)  # resident
    host_res, _ = tl.score_matrix(x, sets, method=method, backend="gpu", chunk_size=37, **kw)  # streamed
    cp.cuda.Device().synchronize()
    return cpu_res, dev_res, host_res


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["scanpy", "mean", "aucell", "ucell"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_gpu_kernels_match_cpu_twins(method, dtype, counts):
    x = counts.astype(dtype)
    sets = [np.arange(0, 30), np.arange(100, 190), np.array([7, 8, 9, 400])]
    kw = {"max_rank": 50} if method == "ucell" else {}
    c, d, h = _gpu_vs_cpu(method, x, sets, **kw)
    if method in ("aucell", "ucell"):
        np.testing.assert_array_equal(c, d)
        np.testing.assert_array_equal(c, h)
    else:
        np.testing.assert_allclose(c, d, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c, h, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
def test_gpu_fold_matches_cpu_fold(counts):
    """The per-gene fold on the GPU equals the CPU's to float64 rounding: atomic adds make the GPU's
    summation order vary, so the last bit may differ (seen on an H200: 12 of 800 genes, <= 2.5e-16 relative)."""
    import cupy as cp
    import cupyx.scipy.sparse as csp

    from atlas.score import exec_cpu, exec_gpu
    from atlas.score.sources import as_source

    for mode in (0, 1, 2):
        dt = np.float64 if mode == 2 else np.float32
        ref, _ = exec_cpu.run_fold(as_source(counts), chunk_size=50, mode=mode, target=1e4, dtype=dt)
        got, _ = exec_gpu.run_fold(
            as_source(csp.csr_matrix(counts)), chunk_size=50, mode=mode, target=1e4, dtype=dt
        )
        streamed, _ = exec_gpu.run_fold(as_source(counts), chunk_size=50, mode=mode, target=1e4, dtype=dt)
        cp.cuda.Device().synchronize()
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0)
        np.testing.assert_allclose(streamed, ref, rtol=1e-13, atol=0)


@pytest.mark.gpu
def test_gpu_rank_partial_rows_and_negatives():
    x, _ = _chunk(seed=3, n=200, g=300)
    sets = [np.arange(0, 300, 3), np.arange(5, 40)]
    for method, kw in (("aucell", {"n_up": 12}), ("ucell", {"max_rank": 10})):
        c, d, h = _gpu_vs_cpu(method, x, sets, **kw)
        np.testing.assert_array_equal(c, d)
        np.testing.assert_array_equal(c, h)


@pytest.mark.gpu
def test_gpu_refuses_cpu_backend_for_device_data(counts):
    import cupyx.scipy.sparse as csp

    with pytest.raises(AtlasError, match="does not move data"):
        tl.score_matrix(csp.csr_matrix(counts), [np.arange(5)], method="mean", backend="cpu")
