"""Where the integrate stage runs: one place decides between the GPU and the CPU.

``backend`` (rapids-singlecell vs scanpy) and ``accelerator`` (torch) are decided here once; later
code dispatches on the result, never on a hidden global. The GPU probe is ``atlas.core.backend``'s;
this module adds what the integrate stage needs on top (rapids-singlecell, torch's CUDA).
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)


def _cupy_device() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, driver errors
        return False


@functools.cache
def rapids_available() -> bool:
    """Whether a CUDA device answers through cupy (``atlas.core.backend``) and rapids-singlecell imports."""
    try:
        from ..core.backend import gpu_available
    except ImportError:  # pragma: no cover - the shared backend module is absent
        gpu_available = _cupy_device
    if not gpu_available():
        return False
    try:
        import rapids_singlecell  # noqa: F401
    except Exception:
        log.info("a CUDA device answers but rapids-singlecell does not import: scanpy on the CPU")
        return False
    return True


def torch_cuda_available() -> bool:
    """Whether torch sees a CUDA device (imports torch)."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_backend(backend: str) -> str:
    """``"auto" | "cpu" | "gpu"`` -> ``"cpu"`` or ``"gpu"`` for the scanpy / rapids-singlecell steps.

    Raises
    ------
    AtlasError
        ``backend="gpu"`` without rapids-singlecell and a CUDA device.
    """
    from ..core.errors import AtlasError

    if backend == "cpu":
        return "cpu"
    if rapids_available():
        return "gpu"
    if backend == "gpu":
        raise AtlasError(
            "backend='gpu' needs rapids-singlecell and cupy with a CUDA device; install the 'gpu' extra "
            "(pip install 'atlas-neutro[gpu]') or set backend: cpu"
        )
    return "cpu"


def resolve_accelerator(accelerator: str) -> str:
    """``"auto" | "cpu" | "gpu" | "cuda"`` -> the Lightning accelerator name (``"cpu"`` or ``"gpu"``)."""
    from ..core.errors import AtlasError

    if accelerator == "cpu":
        return "cpu"
    if torch_cuda_available():
        return "gpu"
    if accelerator in ("gpu", "cuda"):
        raise AtlasError(
            f"accelerator={accelerator!r} but torch sees no CUDA device; set accelerator: auto or cpu"
        )
    return "cpu"
