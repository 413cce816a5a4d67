"""Where the integrate stage runs: one place decides between the GPU and the CPU.

``backend`` (rapids-singlecell vs scanpy) and ``accelerator`` (torch) are decided here once; later
code dispatches on the result, never on a hidden global. The device probes are ``atlas.core.backend``'s
(cupy's GPU, torch's CUDA); this module adds what the integrate stage needs on top (rapids-singlecell).
"""

from __future__ import annotations

import functools
import logging

from ..core.backend import gpu_available, torch_cuda_status

log = logging.getLogger(__name__)


@functools.cache
def rapids_available() -> bool:
    """Whether a CUDA device answers through cupy (``atlas.core.backend``) and rapids-singlecell imports."""
    if not gpu_available():
        return False
    try:
        import rapids_singlecell  # noqa: F401
    except Exception:
        log.info("a CUDA device answers but rapids-singlecell does not import: scanpy on the CPU")
        return False
    return True


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
    ok, why = torch_cuda_status()
    if ok:
        return "gpu"
    if accelerator in ("gpu", "cuda"):
        raise AtlasError(
            f"accelerator={accelerator!r} but torch cannot train on CUDA: {why}; set accelerator: auto or cpu"
        )
    return "cpu"
