"""Compute kernels: CUDA sources (``*.cu``, loaded with ``cupy.RawModule``) and their CPU twins.

* :mod:`atlas._kernels.cpu` holds the numba twins (``@njit(parallel=True)``, float64 accumulation).
* :mod:`atlas._kernels.gpu` launches the CUDA kernels on cupy arrays and streams host chunks.
* :func:`load_module` compiles a ``.cu`` file once per set of template instantiations (one per
  dtype) and caches the module for the process.

Nothing here is imported by ``import atlas``; numba and cupy load on first use.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent


def cu_sources() -> list[Path]:
    """All CUDA source files shipped with atlas (compiled by the nvcc test where nvcc exists)."""
    return sorted(KERNEL_DIR.glob("*.cu"))


def kernel_sources() -> list[Path]:
    """The ``.cu`` files that define kernels (``_common.cu`` only holds shared device helpers)."""
    return [p for p in cu_sources() if not p.name.startswith("_")]


@cache
def load_module(name: str, name_expressions: tuple[str, ...]):
    """Compile ``<name>.cu`` for the given template instantiations and cache the module.

    Parameters
    ----------
    name
        File stem under ``atlas/_kernels`` (e.g. ``"weighted_sum"``).
    name_expressions
        Kernel instantiations to compile, e.g. ``("weighted_sum<float, int>",)``; one compile per
        distinct tuple (so per dtype combination), cached for the process.
    """
    from ..core.backend import get_cupy

    cp = get_cupy()
    code = (KERNEL_DIR / f"{name}.cu").read_text()
    options = ("-std=c++17", f"-I{KERNEL_DIR}")
    return cp.RawModule(code=code, options=options, name_expressions=name_expressions)
