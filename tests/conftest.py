"""Shared test fixtures and markers."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` unless cupy can use a CUDA GPU (the probe of ``atlas.core.backend``)."""
    if not any("gpu" in item.keywords for item in items):
        return  # no probe (no cupy import) when no GPU test was collected
    from atlas.core.backend import gpu_status

    ok, why = gpu_status()
    if ok:
        return
    skip = pytest.mark.skip(reason=f"no CUDA GPU answers: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
