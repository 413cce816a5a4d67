"""Shared test fixtures and markers."""

from __future__ import annotations

import pytest


def _gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _gpu_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU answers (cupy missing or no device)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
