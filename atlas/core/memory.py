"""Peak memory of a step of the run: resident set size (RSS) of this process, and the GPU's when used.

On Linux the kernel's peak RSS (``VmHWM`` in ``/proc/self/status``) is reset at the start of a step
by writing ``5`` to ``/proc/self/clear_refs``, so each step gets its own peak. Where that is not
possible (macOS, a locked-down ``/proc``) the peak falls back to ``getrusage``'s ``ru_maxrss``, the
peak since the process started: it never goes down, so a step's figure may belong to an earlier
step (:attr:`PeakMemory.per_step` is then ``False`` and the summary says so).

Only this process is counted: child processes (Dask workers, a spawned data loader) are not, as
their memory is not part of ``VmHWM``. GPU memory is PyTorch's peak allocation on the current device,
recorded only when torch had already been imported and CUDA initialised by the step (RAPIDS/CuPy
pools are not counted).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from types import TracebackType

__all__ = ["PeakMemory", "peak_rss_bytes", "reset_peak_rss"]

_GIB = 1024**3
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux); returns whether it could."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _vm_hwm() -> int | None:
    """``VmHWM`` in bytes, or None where ``/proc/self/status`` does not have it."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_bytes() -> int:
    """Peak RSS of this process in bytes: since the last :func:`reset_peak_rss` on Linux, since start otherwise."""
    hwm = _vm_hwm()
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, kB elsewhere


def _cuda():
    """The torch.cuda module when torch is imported and CUDA initialised, else None (never imports torch)."""
    torch = sys.modules.get("torch")
    try:
        return torch.cuda if torch is not None and torch.cuda.is_initialized() else None
    except Exception:  # a half-imported or CPU-only torch
        return None


class PeakMemory:
    """Measure the peak memory of a ``with`` block.

    Attributes (set on exit)
    ------------------------
    rss_gib
        Peak RSS of this process in GiB.
    per_step
        ``True`` when the peak was reset at the start (the figure is this block's own), ``False`` when
        it is the process's peak so far (see the module docstring).
    gpu_gib
        PyTorch's peak GPU allocation in GiB, or None when CUDA was not used.
    """

    def __init__(self) -> None:
        self.rss_gib = 0.0
        self.per_step = False
        self.gpu_gib: float | None = None

    def __enter__(self) -> PeakMemory:
        self.per_step = reset_peak_rss() and _vm_hwm() is not None
        cuda = _cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.rss_gib = peak_rss_bytes() / _GIB
        cuda = _cuda()
        if cuda is not None:
            try:
                self.gpu_gib = cuda.max_memory_allocated() / _GIB
            except Exception:  # pragma: no cover - a CUDA context that went bad in the step
                self.gpu_gib = None
