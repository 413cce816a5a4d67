"""Where the data go: the one place that chooses between the CPU and the GPU.

``backend="auto"|"cpu"|"gpu"`` is decided here once per call; after that, dispatch follows the
array type (numpy/scipy on the host, cupy/cupyx on the device), never a hidden global.

* ``"auto"`` uses the GPU only when cupy imports and a device answers, else the CPU.
* ``"gpu"`` with no usable GPU raises :class:`~atlas.core.errors.AtlasError` (never a silent fallback).
* ``"cpu"`` with data already on the GPU raises too: we do not move data between host and device
  behind the user's back.

The device probes live here, one function per question, each cached per process, cheap after the
first call, never raising and saying why not:

* :func:`gpu_status` / :func:`gpu_available`: can cupy use a CUDA GPU (scoring kernels, rapids-singlecell,
  the ``gpu`` test marker)?
* :func:`torch_cuda_status` / :func:`torch_cuda_available`: can torch train on CUDA (scVI, scArches)?

cupy and torch are imported inside functions only, so ``import atlas`` stays light.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any, Literal

from .errors import AtlasError

logger = logging.getLogger(__name__)

Backend = Literal["auto", "cpu", "gpu"]
BACKENDS: tuple[str, ...] = ("auto", "cpu", "gpu")


@cache
def gpu_status() -> tuple[bool, str]:
    """``(usable, why)``: whether cupy imports and at least one CUDA device answers, and the reason.

    Cached per process; never raises (a missing or broken cupy/CUDA install is a ``False`` with its error).
    """
    try:
        import cupy
    except Exception as err:  # ImportError, or a broken CUDA install raising at import
        return False, f"cupy is not importable ({type(err).__name__}: {err})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        return False, f"cupy imports but no CUDA device answers ({type(err).__name__}: {err})"
    if n < 1:
        return False, "cupy imports but reports 0 CUDA devices"
    return True, f"{n} CUDA device(s)"


def gpu_available() -> bool:
    """True when cupy imports and a CUDA device answers (cached per process; see :func:`gpu_status`)."""
    return gpu_status()[0]


@cache
def torch_cuda_status() -> tuple[bool, str]:
    """``(usable, why)``: whether torch sees a CUDA device to train on, and the reason.

    Cached per process; imports torch; never raises.
    """
    try:
        import torch
    except Exception as err:
        return False, f"torch is not importable ({type(err).__name__}: {err})"
    try:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception as err:
        return False, f"torch's CUDA check failed ({type(err).__name__}: {err})"
    if n < 1:
        return False, f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA device"
    return True, f"{n} CUDA device(s)"


def torch_cuda_available() -> bool:
    """True when torch sees a CUDA device (cached per process; see :func:`torch_cuda_status`)."""
    return torch_cuda_status()[0]


def is_device_array(x: Any) -> bool:
    """True for cupy arrays and cupyx sparse matrices (checked without importing cupy)."""
    mod = type(x).__module__
    return mod.startswith("cupy") or mod.startswith("cupyx")


def is_dask_array(x: Any) -> bool:
    """True for dask arrays (checked without importing dask)."""
    return type(x).__module__.startswith("dask.array")


def resolve_backend(backend: str, data: Any = None) -> Literal["cpu", "gpu"]:
    """Turn ``"auto"|"cpu"|"gpu"`` into ``"cpu"`` or ``"gpu"`` for the given data.

    Parameters
    ----------
    backend
        The user's choice.
    data
        The matrix to be processed (optional). Data already on the GPU force ``"gpu"`` under
        ``"auto"``, and are refused under ``"cpu"``.

    Returns
    -------
    ``"cpu"`` or ``"gpu"``.
    """
    if backend not in BACKENDS:
        raise AtlasError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    on_device = data is not None and is_device_array(data)
    if backend == "cpu":
        if on_device:
            raise AtlasError(
                "backend='cpu' but the matrix is a cupy array on the GPU; atlas does not move data "
                "to the host silently: pass backend='gpu' (or 'auto'), or call .get() on the matrix first"
            )
        return "cpu"
    ok, why = gpu_status()
    if backend == "gpu":
        if not ok:
            raise AtlasError(
                f"backend='gpu' was requested but no GPU is usable: {why}. Install cupy for your CUDA "
                "version (pip install 'atlas-neutro[gpu]') on a machine with an NVIDIA GPU, or pass "
                "backend='cpu' (or 'auto')"
            )
        return "gpu"
    # auto
    if on_device:
        if not ok:  # cupy arrays exist, so cupy imports; a device must answer
            raise AtlasError(f"the matrix is a cupy array but no GPU answers: {why}")
        return "gpu"
    chosen = "gpu" if ok else "cpu"
    logger.debug("backend='auto' -> %s (%s)", chosen, why)
    return chosen


def get_cupy():
    """Import and return cupy, with an :class:`AtlasError` naming the fix when it is missing."""
    ok, why = gpu_status()
    if not ok:
        raise AtlasError(f"the GPU backend needs cupy and a CUDA device: {why}")
    import cupy

    return cupy
