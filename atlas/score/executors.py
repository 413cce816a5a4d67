"""What runs a scoring pass, decided once per call: the CPU (numba), the GPU (cupy) or Dask over either.

Every executor exposes the same passes with the same signatures (:class:`Executor`):
:mod:`atlas.score.exec_cpu` and :mod:`atlas.score.exec_gpu` run them on a
:class:`~atlas.score.sources.RowSource`; :class:`atlas.score.exec_dask.DaskExecutor` runs them on a
dask array, each block by the CPU or GPU executor. :func:`resolve_backend` is the one place that
looks at the requested backend and at the data; :func:`plan` turns its answer into a source and
an executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from ..core import backend as _backend
from ..core.errors import AtlasError
from .rowkernel import RowKernel


class Executor(Protocol):
    """The passes of a scoring run (see :mod:`atlas.score.exec_cpu` for their contracts)."""

    NAME: str

    def run_rows(self, src: Any, kern: RowKernel, chunk_size: int) -> np.ndarray:
        """``(n_rows, n_out)`` results of ``kern`` over every row."""

    def run_fold(
        self, src: Any, chunk_size: int, mode: int, target: float, dtype: Any, acc: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-gene sums in row order (continuing from ``acc``) and stored values per gene (or ``None``)."""

    def run_col_counts(self, src: Any, chunk_size: int) -> np.ndarray:
        """Stored values per gene."""


def resolve_backend(backend: str, X: Any) -> Literal["cpu", "gpu"]:
    """``"cpu"`` or ``"gpu"``: what will run the kernels on ``X`` for the requested ``backend``.

    In-memory and on-disk matrices follow :func:`atlas.core.backend.resolve_backend` (``"auto"``
    takes the GPU when one answers; cupy data need it). A dask array's blocks stay where they are
    under ``"auto"`` (host blocks: CPU, cupy blocks: GPU); ``"gpu"`` streams host blocks to the
    device; ``"cpu"`` refuses cupy blocks (data are never moved to the host behind the user's back).
    """
    from .exec_dask import blocks_on_device

    if not _backend.is_dask_array(X):
        return _backend.resolve_backend(backend, X)
    if backend not in _backend.BACKENDS:
        raise AtlasError(f"backend={backend!r} is not one of {', '.join(_backend.BACKENDS)}")
    on_device = blocks_on_device(X)
    if backend == "cpu" and on_device:
        raise AtlasError(
            "backend='cpu' but the dask array holds cupy blocks on the GPU; atlas does not move data to the "
            "host silently: pass backend='gpu' (or 'auto'), or move the blocks first (x.map_blocks(lambda b: b.get()))"
        )
    if backend == "auto" and not on_device:
        return "cpu"
    return _backend.resolve_backend(backend, getattr(X, "_meta", None) if on_device else None)


@dataclass(frozen=True)
class Plan:
    """A matrix ready to score: its source, the executor of every pass and the backend it runs on."""

    src: Any
    executor: Executor
    backend: Literal["cpu", "gpu"]


def plan(X: Any, backend: str) -> Plan:
    """Wrap ``X`` as a source and choose its executor once, from :func:`resolve_backend`."""
    from .sources import as_source

    if _backend.is_dask_array(X):
        from .exec_dask import DaskExecutor, DaskSource

        src = DaskSource(X)
        be = resolve_backend(backend, X)
        return Plan(src, DaskExecutor(executor(be)), be)
    src = as_source(X)
    be = resolve_backend(backend, X)
    return Plan(src, executor(be), be)


def executor(backend: Literal["cpu", "gpu"]) -> Executor:
    """The executor module of a resolved backend."""
    if backend == "gpu":
        from . import exec_gpu

        return exec_gpu
    from . import exec_cpu

    return exec_cpu
