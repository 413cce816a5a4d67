"""Keep numba's compiled kernels of umap-learn and pynndescent between processes.

scanpy's neighbour graph and UMAP run on umap-learn and pynndescent, whose numba kernels are compiled
without numba's on-disk cache: every process that builds a graph compiles several hundred functions
again (10-30 s on two cores, more than the graph of a small data set takes). Importing the two
libraries through :func:`cache_graph_kernels` first asks numba to cache them (``cache=True``), so only
the first process on a machine compiles. Results are unchanged: the cache holds the same machine code.
If numba cannot cache (no writable ``__pycache__`` or ``NUMBA_CACHE_DIR``), the libraries are imported
as usual.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import warnings

log = logging.getLogger(__name__)

_LIBRARIES = ("pynndescent", "umap")


def _with_cache(decorator):
    @functools.wraps(decorator)
    def wrapped(*args, **kwargs):
        kwargs.setdefault("cache", True)
        return decorator(*args, **kwargs)

    return wrapped


def _forget(prefixes: tuple[str, ...]) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[name]


def cache_graph_kernels() -> bool:
    """Import pynndescent and umap-learn with numba's disk cache on; ``True`` if the cache is in use.

    Call it before the first ``sc.pp.neighbors``/``sc.tl.umap`` of a process; once either library is
    imported it does nothing (returns ``False``).
    """
    if any(lib in sys.modules for lib in _LIBRARIES):
        return False
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency of scanpy
        return False
    njit, jit = numba.njit, numba.jit
    numba.njit, numba.jit = _with_cache(njit), _with_cache(jit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "cannot cache ... dynamic globals": that function just compiles
            for lib in _LIBRARIES:
                importlib.import_module(lib)
        return True
    except Exception as e:  # noqa: BLE001 - any failure: fall back to the libraries' own behaviour
        log.debug("numba cache for umap/pynndescent unavailable (%s); compiling as usual", e)
        _forget(_LIBRARIES)
        return False
    finally:
        numba.njit, numba.jit = njit, jit
