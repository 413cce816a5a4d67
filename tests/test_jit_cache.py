"""umap-learn and pynndescent are imported with numba's disk cache on (atlas.core.jit)."""

import subprocess
import sys

CHECK = """
import sys
from atlas.core.jit import cache_graph_kernels
assert cache_graph_kernels() is True
assert cache_graph_kernels() is False  # already imported: nothing to do
import numba
import umap.umap_ as u
assert numba.njit.__module__.startswith("numba"), "numba.njit must be restored"
assert type(u.smooth_knn_dist._cache).__name__ != "NullCache", "umap's kernels are not cached"
"""


def test_graph_kernels_are_cached_and_numba_restored():
    res = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
