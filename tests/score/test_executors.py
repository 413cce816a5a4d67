"""Executors: peers with one signature, chosen once from the backend and the data (dask included)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import atlas.score as tl
from atlas.core import backend as core_backend
from atlas.core.errors import AtlasError, ConfigError
from atlas.score import exec_cpu, exec_dask, exec_gpu
from atlas.score.executors import plan, resolve_backend
from atlas.score.matrix import METHODS, membership
from atlas.score.rowkernel import RowKernel
from atlas.score.sources import as_source

pytestmark = pytest.mark.filterwarnings("ignore")
SETS = [np.arange(0, 30), np.arange(100, 190), np.array([7, 8, 9, 400])]


def _dask(counts, **kw):
    import dask.array as da

    return da.from_array(counts, chunks=(70, -1), asarray=False, **kw)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A machine where cupy 'answers' (nothing may actually run on it)."""
    monkeypatch.setattr(core_backend, "gpu_status", lambda: (True, "1 CUDA device(s) (faked)"))


def _params(fn) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_executors_are_peers_with_one_signature():
    dask_ex = exec_dask.DaskExecutor(exec_cpu)
    for name in ("run_rows", "run_fold", "run_col_counts"):
        sig = _params(getattr(exec_cpu, name))
        assert _params(getattr(exec_gpu, name)) == sig, name
        assert _params(getattr(dask_ex, name)) == sig, name
    assert (exec_cpu.NAME, exec_gpu.NAME, dask_ex.NAME) == ("cpu", "gpu", "cpu")


def test_cpu_executor_leaves_the_kernel_unchanged(counts):
    kern = RowKernel(
        "weighted_sum", 2, membership(SETS[:2], counts.shape[1], [0.5, 0.25]), {"mode": 0, "target": 1e4}
    )
    before = dict(kern.arrays)
    out = exec_cpu.run_rows(as_source(counts), kern, 64)
    assert out.shape == (counts.shape[0], 2) and out.flags.f_contiguous
    assert kern.arrays.keys() == before.keys() and all(kern.arrays[k] is v for k, v in before.items())


def test_plan_chooses_once(counts):
    p = plan(counts, "cpu")
    assert p.backend == "cpu" and p.executor is exec_cpu and p.src.kind == "csr"
    p = plan(_dask(counts), "auto")
    assert (
        p.backend == "cpu"
        and isinstance(p.executor, exec_dask.DaskExecutor)
        and p.executor.blocks is exec_cpu
    )


@pytest.mark.parametrize("method", METHODS)
def test_dask_auto_reports_the_cpu_that_ran(counts, method, fake_gpu):
    """Bug: with a GPU answering, dask + auto reported 'gpu' while numba scored the host blocks."""
    import anndata as ad

    got, details = tl.score_matrix(_dask(counts), SETS, method=method, backend="auto")
    ref, _ = tl.score_matrix(counts, SETS, method=method, backend="cpu")
    assert details.backend == "cpu"
    np.testing.assert_array_equal(got, ref)
    if method == "mean":
        a = ad.AnnData(_dask(counts))
        a.var_names = [f"G{i}" for i in range(counts.shape[1])]
        tl.score_signatures(a, {"s": ["G1", "G2", "G3"]}, method="mean", backend="auto")
        assert a.uns["signature_scores"]["backend"] == "cpu"


def test_dask_cpu_refuses_cupy_blocks(counts, monkeypatch):
    """Bug: backend='cpu' with cupy blocks ran the CUDA kernels; now a clear error, nothing runs."""
    monkeypatch.setattr(exec_dask, "blocks_on_device", lambda x: True)
    with pytest.raises(AtlasError, match="cupy blocks"):
        tl.score_matrix(_dask(counts), SETS, method="mean", backend="cpu")
    with pytest.raises(AtlasError, match="cupy blocks"):
        resolve_backend("cpu", _dask(counts))


def test_dask_gpu_without_gpu_raises(counts):
    """backend='gpu' on a dask array never falls back to numba."""
    if core_backend.gpu_available():
        pytest.skip("a GPU answers")
    with pytest.raises(AtlasError, match="no GPU is usable"):
        tl.score_matrix(_dask(counts), SETS, method="mean", backend="gpu")
    with pytest.raises(AtlasError, match="not one of"):
        resolve_backend("tpu", _dask(counts))


def test_score_store_settings_go_through_the_model(adata, sets, tmp_path):
    path = tmp_path / "s.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(ConfigError, match="score_store.*\n.*method"):
        tl.score_store(path, sets, method="scanpyy")
    with pytest.raises(ConfigError, match="chunk_size"):
        tl.score_store(path, sets, chunk_size=0)


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_dask_blocks_on_the_device_and_host_blocks_on_gpu(counts, method):
    import cupyx.scipy.sparse as csp

    ref, _ = tl.score_matrix(counts, SETS, method=method, backend="cpu")
    dev = _dask(counts).map_blocks(
        csp.csr_matrix, dtype=np.float32, meta=csp.csr_matrix((0, 0), dtype=np.float32)
    )
    assert exec_dask.blocks_on_device(dev)
    got, details = tl.score_matrix(dev, SETS, method=method, backend="auto")
    assert details.backend == "gpu"
    streamed, details = tl.score_matrix(_dask(counts), SETS, method=method, backend="gpu")
    assert details.backend == "gpu"
    for x in (got, streamed):
        if method in ("aucell", "ucell"):
            np.testing.assert_array_equal(x, ref)
        else:
            np.testing.assert_allclose(x, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(AtlasError, match="cupy blocks"):
        tl.score_matrix(dev, SETS, method=method, backend="cpu")
