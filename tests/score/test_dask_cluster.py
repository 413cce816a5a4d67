"""Scoring on a multi-process Dask cluster equals in-process scoring exactly (issue 16).

Worker processes receive the kernels, the executor module and the row blocks by pickling; each
worker JIT-compiles (or loads from numba's cache) its own kernels. The scores must be bit-identical
to the in-process run for every method, with ``score_matrix`` and with ``score_signatures``.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import atlas.score as tl
from atlas.score.matrix import METHODS

pytestmark = pytest.mark.filterwarnings("ignore")
SETS = [np.arange(0, 30), np.arange(100, 190), np.array([7, 8, 9, 400])]


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes (what CI's two cores allow); closed after the module."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=50
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _dask(counts):
    import dask.array as da

    return da.from_array(counts, chunks=(70, -1), asarray=False)


@pytest.mark.parametrize("method", METHODS)
def test_process_cluster_scores_equal_in_process(client, counts, method):
    from distributed import get_task_stream

    ref, ref_details = tl.score_matrix(counts, SETS, method=method, backend="cpu")
    with get_task_stream(client) as stream:
        got, details = tl.score_matrix(_dask(counts), SETS, method=method, backend="auto")
    assert details.backend == "cpu" and details.as_dict() == ref_details.as_dict()
    np.testing.assert_array_equal(got, ref)
    # the blocks ran in the worker processes, on both of them
    assert len({task["worker"] for task in stream.data}) == 2


def test_process_cluster_score_signatures(client, adata, sets):
    ref = tl.score_signatures(adata, sets, method="scanpy", backend="cpu", key_added=None)
    lazy = ad.AnnData(_dask(adata.X), obs=adata.obs.copy(), var=adata.var.copy())
    got = tl.score_signatures(lazy, sets, method="scanpy", backend="auto", key_added=None)
    np.testing.assert_array_equal(got.to_numpy(), ref.to_numpy())
    assert list(got.columns) == list(ref.columns)
